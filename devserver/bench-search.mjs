#!/usr/bin/env node
// Search benchmark for the dev FHIR server (bounded: one load, a few timed queries).
//
//   node devserver/fhir-server.mjs --port 8090 [--naive-search] &
//   node devserver/bench-search.mjs [--base-url http://127.0.0.1:8090/fhir/R4] [--patients 50] [--observations 20000]
//
// Loads <patients> Patients, each with an Encounter and <observations>/<patients> Observations
// (one transaction Bundle per patient, urn:uuid references), then times a few searches.

import crypto from 'node:crypto';
import { parseArgs } from 'node:util';

const { values: args } = parseArgs({
  options: {
    'base-url': { type: 'string', default: 'http://127.0.0.1:8090/fhir/R4' },
    patients: { type: 'string', default: '50' },
    observations: { type: 'string', default: '20000' },
    repeat: { type: 'string', default: '3' },
  },
});
const base = args['base-url'].replace(/\/$/, '');
const patients = Number(args.patients);
const perPatient = Math.ceil(Number(args.observations) / patients);
const repeat = Number(args.repeat);

const LOINC = [
  ['2951-2', 'Sodium', 'mmol/L', 140],
  ['2823-3', 'Potassium', 'mmol/L', 4.2],
  ['2345-7', 'Glucose', 'mg/dL', 95],
  ['4548-4', 'Hemoglobin A1c', '%', 5.6],
  ['8867-4', 'Heart rate', '/min', 72],
];

function observation(i, patientUrn, encounterUrn) {
  const [code, display, unit, mean] = LOINC[i % LOINC.length];
  const day = new Date(Date.UTC(2020, 0, 1) + i * 86400000).toISOString();
  return {
    resourceType: 'Observation',
    status: 'final',
    category: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'laboratory' }] }],
    code: { coding: [{ system: 'http://loinc.org', code, display }], text: display },
    subject: { reference: patientUrn },
    encounter: { reference: encounterUrn },
    effectiveDateTime: day,
    valueQuantity: { value: mean, unit, system: 'http://unitsofmeasure.org', code: unit },
  };
}

function patientBundle(p) {
  const patientUrn = `urn:uuid:${crypto.randomUUID()}`;
  const encounterUrn = `urn:uuid:${crypto.randomUUID()}`;
  const entry = [
    {
      fullUrl: patientUrn,
      resource: { resourceType: 'Patient', name: [{ family: `Bench${p}`, given: ['Test'] }], gender: 'female' },
      request: { method: 'POST', url: 'Patient' },
    },
    {
      fullUrl: encounterUrn,
      resource: {
        resourceType: 'Encounter',
        status: 'finished',
        class: { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'AMB' },
        subject: { reference: patientUrn },
      },
      request: { method: 'POST', url: 'Encounter' },
    },
  ];
  for (let i = 0; i < perPatient; i++) {
    entry.push({
      fullUrl: `urn:uuid:${crypto.randomUUID()}`,
      resource: observation(i, patientUrn, encounterUrn),
      request: { method: 'POST', url: 'Observation' },
    });
  }
  return { resourceType: 'Bundle', type: 'transaction', entry };
}

async function fhir(method, path, body) {
  const res = await fetch(`${base}/${path}`, {
    method,
    headers: { 'Content-Type': 'application/fhir+json', Accept: 'application/fhir+json' },
    body: body ? JSON.stringify(body) : undefined,
  });
  const json = await res.json();
  if (!res.ok) {
    throw new Error(`${method} ${path} -> ${res.status} ${JSON.stringify(json).slice(0, 300)}`);
  }
  return json;
}

async function timed(label, path) {
  const times = [];
  let result;
  for (let i = 0; i < repeat; i++) {
    const t0 = performance.now();
    result = await fhir('GET', path);
    times.push(performance.now() - t0);
  }
  const fmt = times.map((t) => `${t.toFixed(1)}`).join(' / ');
  console.log(`${label.padEnd(44)} total=${String(result.total).padStart(5)} entries=${String(result.entry?.length ?? 0).padStart(4)}  ms: ${fmt}`);
}

const t0 = performance.now();
let patientId;
for (let p = 0; p < patients; p++) {
  const response = await fhir('POST', '', patientBundle(p));
  const location = response.entry[0].response.location; // "Patient/<id>"
  if (p === Math.floor(patients / 2)) {
    patientId = location.split('/')[1];
  }
}
const loadMs = performance.now() - t0;
console.log(`loaded ${patients} patients x ${perPatient} observations in ${(loadMs / 1000).toFixed(1)} s`);

await timed('Observation?patient=Patient/<id>', `Observation?patient=Patient/${patientId}`);
await timed('Observation?patient=Patient/<id>&_count=1000', `Observation?patient=Patient/${patientId}&_count=1000`);
await timed('Observation?subject=Patient/<id>&code=2951-2', `Observation?subject=Patient/${patientId}&code=2951-2&_count=1000`);
await timed('Observation?code=http://loinc.org|2951-2', `Observation?code=${encodeURIComponent('http://loinc.org|2951-2')}`);
await timed('Observation?date=ge2020-06-01&_sort=-date', 'Observation?date=ge2020-06-01&_sort=-date');
await timed('Patient/<id>/$everything', `Patient/${patientId}/$everything`);
