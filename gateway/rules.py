"""The rule ids the gateway's core refuses with (OperationOutcome ``details.coding`` and the audit
record's ``reasons``). Ids are an interface: the IT desk looks them up, auditors search by them —
never rename one. Each control keeps its own ids in its package (plugins/<control>/); the policy's
ids are in opa_policies/.
"""

from __future__ import annotations

#: a bug: the request was not completed (nothing leaves)
INTERNAL = "gateway.internal"
#: II.2: the audit record could not be written, so nothing is released
AUDIT_UNAVAILABLE = "audit.unavailable"
#: no audit record with that request id
AUDIT_NOT_FOUND = "audit.not-found"
#: no decision could be made (engine down, slow, malformed answer): refused
POLICY_UNAVAILABLE = "policy.unavailable"
#: refused by policy without a reason of its own
POLICY_DENY = "policy.deny"
#: the resource asked for is withheld by the response decision
POLICY_WITHHELD = "policy.withheld"
#: the request body exceeds max_request_bytes
BODY_TOO_LARGE = "fhir.body-too-large"
#: a request body of a type the gateway does not read
MEDIA_TYPE = "fhir.media-type"
#: a POST _search form that is not UTF-8
BAD_FORM = "fhir.bad-form"
#: a request body that is not JSON
BAD_JSON = "fhir.bad-json"
#: XML or another format than FHIR JSON asked for
FORMAT_NOT_ACCEPTABLE = "fhir.format-not-acceptable"
#: a FHIR request the gateway cannot read
MALFORMED = "fhir.malformed"
#: an id that is not a FHIR id
BAD_ID = "fhir.bad-id"
#: not an R4 resource type
UNKNOWN_TYPE = "fhir.unknown-type"
#: not a FHIR interaction the gateway understands
UNKNOWN_INTERACTION = "fhir.unknown-interaction"
#: a written resource that is not valid R4
INVALID_RESOURCE = "fhir.invalid-resource"
#: a PATCH that is not JSON Patch
PATCH_FORMAT = "fhir.patch-format"
#: I.3: a reference by search (`Patient?identifier=…`) in a write body
CONDITIONAL_REFERENCE = "fhir.conditional-reference"
#: I.4: a search parameter that is not an R4 search parameter of the type searched (names are
#: case-sensitive: `PATIENT`, `_HAS`), an unknown link of a chain or `_has`
SEARCH_UNKNOWN_PARAM = "fhir.search-unknown-parameter"
#: I.4: a search parameter the gateway cannot tell the selection of: `_filter`, `_query`, `_text`,
#: `_content`, `_list`, `_contained`, `_containedType`, `_type` outside a system search; `_sort` by
#: graded content
SEARCH_PARAM_NOT_SERVED = "fhir.search-parameter-not-served"
#: I.4: a modifier the gateway cannot reason about for the parameter's type (`code:in`, `_id:not`,
#: `subject:identifier`, `code:text` …): only those in gateway/fhir/params.py's allow-list
SEARCH_MODIFIER_NOT_SERVED = "fhir.search-modifier-not-served"
#: I.4: a chain or `_has` that ends in graded content (codes, labels), or `_has` in a system search
SEARCH_CHAIN_NOT_SERVED = "fhir.search-chain-not-served"
#: a result parameter (`_count`, `_sort`, `_include` …) or `:missing` with a value it does not take
SEARCH_BAD_VALUE = "fhir.search-bad-value"
#: a PATCH inside a batch or transaction
PATCH_IN_BUNDLE = "fhir.patch-in-bundle"
#: the FHIR server did not answer in time
UPSTREAM_TIMEOUT = "upstream.timeout"
#: the FHIR server could not be reached
UPSTREAM_UNREACHABLE = "upstream.unreachable"
#: the FHIR server answered in another format than JSON
UPSTREAM_NOT_JSON = "upstream.not-json"
#: the FHIR server's JSON is broken
UPSTREAM_BAD_JSON = "upstream.bad-json"
#: the FHIR server's answer exceeds max_response_bytes
UPSTREAM_TOO_LARGE = "upstream.too-large"
#: the FHIR server's answer is not a FHIR resource
UPSTREAM_NOT_FHIR = "upstream.not-fhir"
#: II.1: no bearer token
AUTH_MISSING_TOKEN = "auth.missing-token"
#: II.1: an Authorization header that is not a bearer token
AUTH_NOT_BEARER = "auth.not-bearer"
#: II.1: not a JWT
AUTH_MALFORMED_TOKEN = "auth.malformed-token"
#: II.1: none, HMAC or an algorithm not configured
AUTH_ALG_NOT_ALLOWED = "auth.alg-not-allowed"
#: II.1: a key used with another algorithm family than its own
AUTH_ALG_MISMATCH = "auth.alg-mismatch"
#: II.1: a kid the identity provider does not publish
AUTH_UNKNOWN_KEY = "auth.unknown-key"
#: II.1: the identity provider's keys could not be fetched
AUTH_JWKS_UNAVAILABLE = "auth.jwks-unavailable"
#: II.1: the signature does not verify
AUTH_BAD_SIGNATURE = "auth.bad-signature"
#: II.1: the token has expired
AUTH_EXPIRED = "auth.expired"
#: II.1: the token is not valid yet (nbf)
AUTH_NOT_YET_VALID = "auth.not-yet-valid"
#: II.1: another issuer than the configured one
AUTH_WRONG_ISSUER = "auth.wrong-issuer"
#: II.1: a token minted for another service
AUTH_WRONG_AUDIENCE = "auth.wrong-audience"
#: II.1: a required claim (exp, iat, sub) is missing
AUTH_MISSING_CLAIM = "auth.missing-claim"
#: II.1: the token is invalid for another reason
AUTH_INVALID_TOKEN = "auth.invalid-token"
#: II.1: more than one Authorization header
AUTH_SEVERAL = "auth.several-credentials"
#: II.1: the roles claim is not an array of strings (nor the configured space-separated form)
AUTH_ROLES_FORMAT = "auth.roles-format"
#: II.1: no personal operator id (sub) in the token
AUTH_NO_OPERATOR = "auth.no-operator"
#: the caller holds none of the roles the endpoint is open to
ADMIN_ROLE = "admin.role"
#: a field of the admin call is missing or wrong
ADMIN_INVALID = "admin.invalid"
#: the admin API takes application/json only
ADMIN_MEDIA_TYPE = "admin.media-type"
#: the admin call's body exceeds max_request_bytes
ADMIN_BODY_TOO_LARGE = "admin.body-too-large"
#: no such grant, no active seal
ADMIN_NOT_FOUND = "admin.not-found"
#: the change contradicts the current state (already sealed, revoked)
ADMIN_CONFLICT = "admin.conflict"
#: not an admin endpoint (audited all the same)
ADMIN_UNKNOWN_ENDPOINT = "admin.unknown-endpoint"
#: a paging cursor the gateway did not issue, or altered
PAGING_BAD_CURSOR = "paging.bad-cursor"
#: a paging cursor of another operator's search
PAGING_NOT_YOURS = "paging.not-yours"
#: a paging cursor used with another purpose of use than the search's
PAGING_PURPOSE = "paging.purpose"
#: a paging cursor past its time (paging_cursor_ttl_seconds)
PAGING_EXPIRED = "paging.expired"
#: an upstream paging parameter (_getpages) from a client, or a cursor beside other parameters
PAGING_RAW = "paging.raw-link"
#: II.2: a path outside /fhir and /admin, or one spelt otherwise than it is served (//fhir, /FHIR,
#: /%66hir, an absolute URL), or a method the health checks do not take: 404, audited all the same
NOT_FOUND = "gateway.not-found"
#: II.2: a request target longer than max_url_bytes: 414, audited
URI_TOO_LONG = "gateway.uri-too-long"
#: II.2: a header field longer than max_header_bytes, or more fields than max_header_count: 431, audited
HEADERS_TOO_LARGE = "gateway.headers-too-large"
#: the records a describing resource (Provenance, List …) is about could not be read upstream
ABOUT_UNREADABLE = "upstream.about-unreadable"
#: A search or history inside a batch/transaction: the gateway builds pages itself (I.4).
SEARCH_IN_BATCH = "fhir.search-in-batch"
