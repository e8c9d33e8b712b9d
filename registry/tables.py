"""Registry files: companies, trucks and terminals as CSV, XLSX or JSON, read into rows that
remember where each value came from, and written back in the same shapes.

Reading only: no database here. `registry.bulk` checks the rows against the registry and
stores them. Spreadsheets come from Excel on Chinese Windows as often as from anywhere else,
so a CSV may be UTF-8 (with or without the BOM Excel writes for "CSV UTF-8") or GBK (what
Excel writes for plain "CSV" in a Chinese locale); headers may be the template's Chinese
names or the English field names.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.problems import problem_list

KINDS = ("companies", "trucks", "terminals")
FORMATS = ("csv", "xlsx", "json")


@dataclass(frozen=True)
class Column:
    name: str  # the canonical (English) field name, also the JSON key of an export
    header: str  # the template's Chinese header, also the CSV/XLSX header of an export
    aliases: tuple[str, ...]
    required: bool
    hint: str  # what goes in it, for the template's notes sheet
    exported: bool = True  # False: an import may use it, an export leaves it out


COLUMNS: dict[str, tuple[Column, ...]] = {
    "companies": (
        Column(
            "name",
            "企业名称",
            ("company", "company_name", "名称", "公司名称", "单位名称"),
            True,
            "运输企业全称",
        ),
        Column(
            "credit_code",
            "统一社会信用代码",
            ("uscc", "信用代码", "社会信用代码"),
            False,
            "18 位；校验位不通过的代码照样保存并标记，格式不对（位数、字符）则拒绝；"
            "重复导入按此代码更新",
        ),
        Column("legal_representative", "法定代表人", ("legal_rep", "法人", "法人代表"), False, ""),
        Column("phone", "联系电话", ("telephone", "电话", "手机"), False, ""),
        Column(
            "active",
            "是否有效",
            ("enabled", "状态", "有效"),
            False,
            "是 / 否；留空：新企业为是，已有企业不变",
        ),
    ),
    "trucks": (
        Column(
            "plate",
            "车牌号",
            ("plate_number", "车牌", "车牌号码", "号牌号码"),
            True,
            "如 粤B12345；重复导入按车牌更新",
        ),
        Column(
            "plate_color",
            "车牌颜色",
            ("color", "颜色", "号牌颜色"),
            False,
            "黄色 / 蓝色 / 绿色 / 黄绿色 / 白色 / 黑色；留空：新车为黄色，已有车辆不变",
        ),
        Column(
            "trailer_plate", "挂车号牌", ("trailer", "挂车车牌", "挂车号"), False, "如 粤B1234挂"
        ),
        Column(
            "company_credit_code",
            "企业统一社会信用代码",
            ("credit_code", "统一社会信用代码", "企业信用代码"),
            False,
            "所属运输企业（须已登记）：按信用代码，或按企业编号，或按企业名称",
        ),
        Column(
            "company_id",
            "企业编号",
            ("company_registry_id",),
            False,
            "本系统中企业的编号（导出不含此列：编号只在本系统内有意义）",
            exported=False,
        ),
        Column(
            "company",
            "企业名称",
            ("company_name", "运输企业", "所属企业"),
            False,
            "仅在未填信用代码和企业编号时用于查找企业",
        ),
        Column(
            "active",
            "是否有效",
            ("enabled", "状态", "有效"),
            False,
            "是 / 否；留空：新车为是，已有车辆不变",
        ),
    ),
    "terminals": (
        Column(
            "device_id",
            "终端编号",
            ("device", "terminal_id", "终端号", "设备号", "设备编号"),
            True,
            "字母、数字和 _ . : -；重复导入按终端编号和绑定开始时间更新",
        ),
        Column("plate", "车牌号", ("plate_number", "车牌", "车牌号码"), True, "已登记的车辆"),
        Column(
            "valid_from",
            "绑定开始",
            ("start", "开始时间", "启用时间", "绑定时间"),
            True,
            "如 2026-03-01 08:00（城市当地时间）或带时区的 ISO 时间",
        ),
        Column(
            "valid_to",
            "绑定结束",
            ("end", "结束时间", "停用时间", "解绑时间"),
            False,
            "留空：一直有效",
        ),
        Column("model", "终端型号", ("terminal_model", "型号", "设备型号"), False, ""),
    ),
}


class RegistryFileError(ValueError):
    """A registry file that cannot be imported; `errors` lists every problem found."""

    def __init__(self, errors: list[str], source: str = "") -> None:
        self.errors = errors
        head, text = problem_list(errors, source)
        count = "1 problem" if len(errors) == 1 else f"{len(errors)} problems"
        super().__init__(f"{head}{count}, nothing imported:\n  {text}")


@dataclass
class Row:
    """One record of a file: its values by canonical field, and where each one came from."""

    line: int
    values: dict[str, Any]
    labels: dict[str, str] = field(default_factory=dict)  # field -> "column B (车牌号)"

    def where(self, name: str) -> str:
        label = self.labels.get(name)
        if label is None:  # a field the file does not have: name it as the template does
            return f"line {self.line}, field {name!r}"
        return f"line {self.line}, {label}"


def column_letter(index: int) -> str:
    """0 → A, 25 → Z, 26 → AA: how a spreadsheet user finds the cell."""
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


def _alias_map(kind: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for col in COLUMNS[kind]:
        for alias in (col.name, col.header, *col.aliases):
            out.setdefault(alias.strip().lower(), col.name)
    return out


def _map_header(
    kind: str, header: list[Any], spreadsheet: bool
) -> tuple[list[str | None], list[str]]:
    """The canonical field of each column (None: empty header); unknown and repeated columns
    are errors, and so is a missing required column."""
    aliases = _alias_map(kind)
    fields: list[str | None] = []
    errors: list[str] = []
    seen: dict[str, str] = {}
    for i, raw in enumerate(header):
        text = "" if raw is None else str(raw).strip()
        where = f"line 1, column {column_letter(i)}" if spreadsheet else "line 1"
        if not text:
            fields.append(None)
            continue
        name = aliases.get(text.lower())
        if name is None:
            errors.append(
                f"{where}: unknown column {text!r}; expected "
                + ", ".join(f"{c.header} ({c.name})" for c in COLUMNS[kind])
            )
        elif name in seen:
            errors.append(f"{where}: columns {seen[name]!r} and {text!r} both mean {name}")
            name = None
        else:
            seen[name] = text
        fields.append(name)
    for col in COLUMNS[kind]:
        if col.required and col.name not in seen:
            errors.append(f"line 1: the column {col.header} ({col.name}) is missing")
    return fields, errors


def _rows_from_grid(kind: str, grid: list[tuple[int, list[Any]]]) -> list[Row]:
    """Rows of a CSV or sheet: `grid` is (line, cells) with the header first."""
    if not grid:
        raise RegistryFileError(["the file is empty: expected a header row"])
    header_line, header = grid[0]
    fields, errors = _map_header(kind, header, spreadsheet=True)
    if errors:
        raise RegistryFileError(errors)
    rows: list[Row] = []
    for line, cells in grid[1:]:
        if all(c is None or (isinstance(c, str) and not c.strip()) for c in cells):
            continue  # blank lines between records, or a sheet's formatted but empty rows
        extra = [c for c in cells[len(fields) :] if c not in (None, "")]
        if extra:
            errors.append(f"line {line}: {len(cells)} cells but {len(fields)} columns")
            continue
        row = Row(line, {})
        for i, name in enumerate(fields):
            if name is None:
                continue
            row.values[name] = cells[i] if i < len(cells) else None
            row.labels[name] = f"column {column_letter(i)} ({str(header[i]).strip()})"
        rows.append(row)
    if errors:
        raise RegistryFileError(errors)
    return rows


def decode_text(data: bytes) -> str:
    """UTF-8 (BOM or none), UTF-16 with a BOM, or GB18030 (a superset of GBK, what Excel in a
    Chinese locale writes for "CSV"). Anything else is refused with the line of the first
    byte that is neither."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise RegistryFileError([f"byte {exc.start}: not UTF-16 text"]) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as utf8:
        try:
            return data.decode("gb18030")
        except UnicodeDecodeError:
            line = data[: utf8.start].count(b"\n") + 1
            raise RegistryFileError(
                [
                    f"line {line}: the text is neither UTF-8 nor GBK (byte {utf8.start}); save "
                    "the file as 'CSV UTF-8' or as an Excel workbook (.xlsx)"
                ]
            ) from None


def parse_csv(kind: str, text: str) -> list[Row]:
    reader = csv.reader(io.StringIO(text, newline=""))
    grid: list[tuple[int, list[Any]]] = []
    previous_end = 0
    try:
        for cells in reader:
            grid.append((previous_end + 1, cells))  # a quoted cell may span lines
            previous_end = reader.line_num
    except csv.Error as exc:
        raise RegistryFileError([f"line {reader.line_num}: {exc}"]) from None
    return _rows_from_grid(kind, grid)


# An .xlsx is a ZIP: a few KB can unpack to gigabytes (a zip bomb). Registry workbooks
# of a whole city unpack to a few MB; anything past this is refused before it is opened.
MAX_XLSX_UNPACKED_BYTES = 64 * 1024 * 1024


def _check_unpacked_size(data: bytes, limit: int) -> None:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            unpacked = sum(member.file_size for member in archive.infolist())
    except zipfile.BadZipFile as exc:
        raise RegistryFileError([f"not an Excel workbook (.xlsx): {exc}"]) from None
    if unpacked > limit:
        raise RegistryFileError(
            [
                f"the workbook unpacks to {unpacked:,} bytes, more than {limit:,}: "
                "refused (a registry workbook unpacks to a few MB)"
            ]
        )


def parse_xlsx(kind: str, data: bytes, *, max_unpacked: int = MAX_XLSX_UNPACKED_BYTES) -> list[Row]:
    """The first sheet of a workbook, its first row the header."""
    import openpyxl

    _check_unpacked_size(data, max_unpacked)
    try:
        book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, OSError, ValueError) as exc:
        raise RegistryFileError([f"not an Excel workbook (.xlsx): {exc}"]) from None
    try:
        sheet = book.worksheets[0]
        grid = [(i, list(cells)) for i, cells in enumerate(sheet.iter_rows(values_only=True), 1)]
    finally:
        book.close()
    return _rows_from_grid(kind, grid)


def parse_json(kind: str, text: str) -> list[Row]:
    """A list of objects (or {"<kind>": [...]}), keys as in the CSV headers. Line numbers are
    where each object starts."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RegistryFileError(
            [f"line {exc.lineno}, column {exc.colno}: invalid JSON: {exc.msg}"]
        ) from None
    if isinstance(doc, dict) and isinstance(doc.get(kind), list):
        doc = doc[kind]
    if not isinstance(doc, list):
        raise RegistryFileError([f"line 1: expected a JSON list of {kind} objects"])
    starts = _object_lines(text)
    aliases = _alias_map(kind)
    rows: list[Row] = []
    errors: list[str] = []
    for n, item in enumerate(doc):
        line = starts[n] if n < len(starts) else 1
        if not isinstance(item, dict):
            errors.append(f"line {line}: expected an object, got {type(item).__name__}")
            continue
        row = Row(line, {})
        for key, value in item.items():
            name = aliases.get(str(key).strip().lower())
            if name is None:
                errors.append(
                    f"line {line}, field {key!r}: unknown field; expected "
                    + ", ".join(c.name for c in COLUMNS[kind])
                )
            elif name in row.values:
                errors.append(f"line {line}, field {key!r}: {name} given twice")
            else:
                row.values[name] = value
                row.labels[name] = f"field {key!r}"
        rows.append(row)
    if errors:
        raise RegistryFileError(errors)
    return rows


def _object_lines(text: str) -> list[int]:
    """The line on which each element of the top-level list starts (for error messages)."""
    decoder = json.JSONDecoder()
    pos = text.find("[")
    lines: list[int] = []
    if pos < 0:
        return lines
    pos += 1
    ws = re.compile(r"[\s,]*")
    while True:
        pos = ws.match(text, pos).end()
        if pos >= len(text) or text[pos] == "]":
            return lines
        lines.append(text.count("\n", 0, pos) + 1)
        try:
            _, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            return lines


def guess_format(filename: str, data: bytes) -> str:
    suffix = Path(filename).suffix.lower().lstrip(".")
    if suffix in ("xlsx", "xlsm"):
        return "xlsx"
    if suffix in ("csv", "txt"):
        return "csv"
    if suffix == "json":
        return "json"
    if data.startswith(b"PK\x03\x04"):
        return "xlsx"
    head = data.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    return "json" if head in (b"[", b"{") else "csv"


def read_rows(kind: str, data: bytes, filename: str = "", fmt: str | None = None) -> list[Row]:
    """The rows of a registry file, or RegistryFileError naming every problem of form."""
    if kind not in KINDS:
        raise RegistryFileError([f"unknown registry {kind!r}; expected one of {', '.join(KINDS)}"])
    fmt = fmt or guess_format(filename, data)
    try:
        if fmt == "xlsx":
            return parse_xlsx(kind, data)
        text = decode_text(data)
        return parse_json(kind, text) if fmt == "json" else parse_csv(kind, text)
    except RegistryFileError as exc:
        raise RegistryFileError(exc.errors, filename) from None


# ------------------------------------------------------------------------------ writing


def write_table(kind: str, records: list[dict[str, Any]], fmt: str) -> bytes:
    """Records (canonical field → text or None) as a file an import reads back unchanged:
    CSV in UTF-8 with a BOM (Excel opens it as Chinese text), XLSX with every cell text (so
    Excel does not turn an 18-digit credit code into a number), JSON with the English keys."""
    cols = [c for c in COLUMNS[kind] if c.exported or not records]
    if fmt == "json":
        out = [{c.name: r.get(c.name) for c in cols} for r in records]
        return (json.dumps(out, ensure_ascii=False, indent=1) + "\n").encode()
    rows = [[c.header for c in cols]] + [[_cell(r.get(c.name)) for c in cols] for r in records]
    if fmt == "csv":
        buf = io.StringIO(newline="")
        csv.writer(buf, lineterminator="\r\n").writerows(rows)
        return buf.getvalue().encode("utf-8-sig")
    if fmt == "xlsx":
        return _xlsx(kind, cols, rows, notes=not records)
    raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def _xlsx(kind: str, cols: list[Column], rows: list[list[str]], notes: bool) -> bytes:
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = kind
    for row in rows:
        sheet.append(row)
    for i, col in enumerate(cols):
        letter = column_letter(i)
        sheet.column_dimensions[letter].width = max(14, len(col.header) * 2 + 4)
        sheet.column_dimensions[letter].number_format = "@"  # text: keep codes and plates
        for cell in sheet[letter]:
            cell.number_format = "@"
    if notes:  # the template explains its columns on a second sheet
        info = book.create_sheet("说明")
        info.append(["列名", "字段", "必填", "说明"])
        for col in cols:
            info.append([col.header, col.name, "是" if col.required else "否", col.hint])
        info.column_dimensions["D"].width = 80
    buf = io.BytesIO()
    book.save(buf)
    return buf.getvalue()


def template(kind: str, fmt: str) -> bytes:
    """An empty file with the Chinese headers (XLSX: and a sheet explaining every column)."""
    return write_table(kind, [], fmt)


def parse_time_text(value: Any, tz: dt.tzinfo) -> dt.datetime:
    """A cell as an aware time: a spreadsheet date, ISO with or without offset (city time),
    'YYYY/MM/DD HH:MM'."""
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=tz)
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=tz)
    text = str(value).strip().replace("/", "-")
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{value!r} is not a time: expected e.g. 2026-03-01 08:00 (city time) or ISO with an "
            "offset"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=tz)
