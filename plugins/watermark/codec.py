"""Digital watermarks (II.2 支持通过数字水印等技术手段,确保使用过程留痕): the codec. hook.py puts the
marks on responses; decode.py traces a mark found in a leaked file (``emrguard watermark decode``).

A disclosure leaves two traces in every resource it releases:

- a ``meta.tag`` coding (system :data:`TAG_SYSTEM`, code = the disclosure id = the audit record's
  ``request_id``): visible, survives anything that keeps the JSON, but carries no MAC;
- an invisible mark appended to free-text fields: zero-width characters, plain Unicode (no markup),
  so it survives JSON re-serialisation (``\\u200b`` escapes or raw UTF-8) and copy-paste of the
  text into a plain file. Layout::

      U+2060 (start, format v1) | 192 bit characters | U+2063 (end)
      bits (most significant first): 128-bit disclosure id | 64-bit MAC
      bit 0 = U+200B ZERO WIDTH SPACE, bit 1 = U+200C ZERO WIDTH NON-JOINER
      MAC = HMAC-SHA256(watermark_secret, "emrguard-watermark-v1\\0" + id)[:8]

  A mark whose MAC does not check is reported as forged/altered: without the secret no one can
  make a valid mark for an id the gateway never issued. (A valid mark can still be cut from one
  text and pasted into another; the decoder shows what the audit record says was disclosed, so
  such a transplant shows up as a resource or patient the record does not list.)
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Any

TAG_SYSTEM = "https://emrguard.example/fhir/CodeSystem/watermark"
TAG_DISPLAY = "disclosed by EMR Guard"
HEADER = "X-EMRGuard-Watermark"

ZERO, ONE = "\u200b", "\u200c"
START, END = "\u2060", "\u2063"
MARK_CHARS = frozenset((ZERO, ONE, START, END))
ID_BYTES, MAC_BYTES = 16, 8
PAYLOAD_BITS = (ID_BYTES + MAC_BYTES) * 8
MARK_LENGTH = PAYLOAD_BITS + 2
MAC_LABEL = b"emrguard-watermark-v1\x00"
#: A start character followed by at least this many bit characters is a (possibly damaged) mark;
#: fewer are taken for stray zero-width characters of the text itself.
MIN_DAMAGED_BITS = 16

_MARK_RE = re.compile(f"{START}([{ZERO}{ONE}]+)({END})?")
_WHOLE_MARK_RE = re.compile(f"{START}[{ZERO}{ONE}]+{END}?")
# A mark copied out of an escaped JSON or HTML source view: \u200b, &#x200B;, &#8203; ...
_ESCAPED_RE = re.compile(
    r"\\u(200[bB]|200[cC]|2060|2063)|&#[xX](200[bB]|200[cC]|2060|2063);|&#(8203|8204|8288|8291);"
)
_XHTML_END_RE = re.compile(r"</(?:[A-Za-z_][\w.-]*:)?div\s*>")
HEX_ID_RE = re.compile(r"^[0-9a-f]{32}$")


class Codec:
    """Makes and checks marks with one secret (``watermark_secret``)."""

    def __init__(self, secret: str | bytes) -> None:
        key = secret.encode("utf-8") if isinstance(secret, str) else secret
        if not key:
            raise ValueError("the watermark secret is empty")
        self._key = key

    def mac(self, id_bytes: bytes) -> bytes:
        return hmac.new(self._key, MAC_LABEL + id_bytes, hashlib.sha256).digest()[:MAC_BYTES]

    def encode(self, disclosure_id: str) -> str:
        """The invisible mark for a disclosure id (32 hex characters, e.g. a uuid4 hex)."""
        if not HEX_ID_RE.match(disclosure_id or ""):
            raise ValueError(f"disclosure id {disclosure_id!r} is not 32 lower-case hex characters")
        raw = bytes.fromhex(disclosure_id)
        bits = "".join(f"{byte:08b}" for byte in raw + self.mac(raw))
        return START + bits.translate(_TO_MARK) + END

    def find(self, text: str) -> list[Mark]:
        """Every mark in ``text``, in order, each checked against the secret (offsets are into
        the text with escaped mark characters turned back into characters)."""
        text = unescape(text)
        marks: list[Mark] = []
        for m in _MARK_RE.finditer(text):
            bits = m.group(1)
            if m.group(2) is None or len(bits) != PAYLOAD_BITS:
                if len(bits) >= MIN_DAMAGED_BITS or m.group(2) is not None:
                    marks.append(Mark("damaged", None, m.start(), m.end()))
                continue
            payload = int(bits.translate(_FROM_MARK), 2).to_bytes(ID_BYTES + MAC_BYTES, "big")
            raw, mac = payload[:ID_BYTES], payload[ID_BYTES:]
            status = "valid" if hmac.compare_digest(mac, self.mac(raw)) else "forged"
            marks.append(Mark(status, raw.hex(), m.start(), m.end()))
        return marks


_TO_MARK = str.maketrans({"0": ZERO, "1": ONE})
_FROM_MARK = str.maketrans({ZERO: "0", ONE: "1"})


@dataclass(frozen=True)
class Mark:
    #: valid (MAC checks) | forged (well formed, MAC fails: forged or altered) | damaged (framing broken)
    status: str
    #: The id the mark carries; for a forged mark only what it claims, not to be trusted.
    disclosure_id: str | None
    start: int
    end: int


def unescape(text: str) -> str:
    """Turn escaped mark characters (``\\u200b``, ``&#x200B;``) back into the characters."""
    if "\\u" not in text and "&#" not in text:
        return text
    return _ESCAPED_RE.sub(_unescape_one, text)


def _unescape_one(m: re.Match[str]) -> str:
    hex_code = m.group(1) or m.group(2)
    return chr(int(hex_code, 16)) if hex_code else chr(int(m.group(3)))


def remove_marks(text: str) -> str:
    """``text`` without any watermark (whole or damaged); stray zero-width characters stay."""
    return _WHOLE_MARK_RE.sub("", text)


def visible(text: str) -> str:
    """``text`` without any of the characters marks are made of (what a reader sees)."""
    return "".join(ch for ch in text if ch not in MARK_CHARS)


def insert_mark(value: str, mark: str, *, xhtml: bool = False) -> str:
    """Put ``mark`` into a text, replacing an earlier mark; XHTML gets it inside, before ``</div>``.

    Returns the text unchanged if there is nowhere valid to put it (an XHTML fragment without a
    closing ``</div>``).
    """
    value = remove_marks(value)
    if not xhtml:
        return value + mark
    ends = list(_XHTML_END_RE.finditer(value))
    if not ends:
        return value
    at = ends[-1].start()
    return value[:at] + mark + value[at:]


def watermark_tag(disclosure_id: str) -> dict[str, str]:
    return {"system": TAG_SYSTEM, "code": disclosure_id, "display": TAG_DISPLAY}


def parse_fields(fields: tuple[str, ...] | list[str]) -> list[tuple[str, ...]]:
    return [tuple(p for p in f.split(".") if p) for f in fields if f.strip(".")]


def mark_resource(
    resource: dict[str, Any], disclosure_id: str, mark: str, fields: list[tuple[str, ...]]
) -> int:
    """Tag one resource and mark its free-text fields (not those of resources inside it).

    An earlier watermark tag or mark (a marked text written back to the server) is replaced, so a
    released resource carries exactly one disclosure id. Returns the number of texts marked.
    """
    meta = resource.get("meta")
    if not isinstance(meta, dict):
        meta = resource["meta"] = {}
    tags = meta.get("tag")
    tags = tags if isinstance(tags, list) else [] if tags is None else [tags]
    meta["tag"] = [t for t in tags if not (isinstance(t, dict) and t.get("system") == TAG_SYSTEM)] + [
        watermark_tag(disclosure_id)
    ]
    return sum(_mark_path(resource, path, mark) for path in fields)


def _mark_path(node: Any, path: tuple[str, ...], mark: str) -> int:
    if not isinstance(node, dict) or not path or path[0] not in node:
        return 0
    head, rest = path[0], path[1:]
    value = node[head]
    if rest:
        return sum(_mark_path(item, rest, mark) for item in (value if isinstance(value, list) else [value]))
    xhtml = head == "div"
    if isinstance(value, str):
        node[head] = insert_mark(value, mark, xhtml=xhtml)
        return int(node[head] != value)
    count = 0
    if isinstance(value, list):  # a repeating string element (e.g. address.line)
        for i, item in enumerate(value):
            if isinstance(item, str):
                value[i] = insert_mark(item, mark, xhtml=xhtml)
                count += int(value[i] != item)
    return count
