"""The CJK fonts of the PDF documents (evidence packs, notices, decisions): Noto Sans CJK SC
and Noto Serif CJK SC cut down to the characters of GB 2312 and converted to TrueType
outlines, installed where fontconfig finds them as "MuckWatch CJK SC" and "MuckWatch Serif
CJK SC".

Why: WeasyPrint embeds a subset of every font a document uses, and fontTools subsets the
system's Noto Sans CJK (a 19 MB collection with CFF outlines) in about 19 s per weight and
document on this machine — an officer's ZIP of 50 evidence packs took a quarter of an hour.
From this font (4 MB, TrueType outlines, indexed glyph data) a document takes about 1 s.
The templates name it first and Noto Sans CJK SC after it, so a character outside GB 2312
(a rare character in a company's name) still prints, from the full font, on the slower path.

`python -m core.cjk_fonts` (run by `make install` and the Dockerfile) builds it once from
the installed Noto collection; nothing here runs at request time.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

FAMILY = "MuckWatch CJK SC"
SERIF_FAMILY = "MuckWatch Serif CJK SC"
_NOTO = "/usr/share/fonts/opentype/noto"
# family built → (the Noto family it is cut from, {style: its collection})
_FAMILIES = {
    FAMILY: (
        "Noto Sans CJK SC",
        {"Regular": f"{_NOTO}/NotoSansCJK-Regular.ttc", "Bold": f"{_NOTO}/NotoSansCJK-Bold.ttc"},
    ),
    SERIF_FAMILY: (
        "Noto Serif CJK SC",
        {
            "Regular": f"{_NOTO}/NotoSerifCJK-Regular.ttc",
            "Bold": f"{_NOTO}/NotoSerifCJK-Bold.ttc",
        },
    ),
}
# Beyond GB 2312: Latin-1 (°, ±, ×), general punctuation, letterlike symbols (℃, №),
# arrows, box and geometric shapes, CJK punctuation and full-width forms.
_EXTRA_RANGES = (
    (0x20, 0x7E),
    (0xA0, 0xFF),
    (0x2000, 0x206F),
    (0x2100, 0x214F),
    (0x2190, 0x21FF),
    (0x2460, 0x24FF),
    (0x2500, 0x25FF),
    (0x3000, 0x303F),
    (0xFF00, 0xFFEF),
)


def default_dir() -> Path:
    """Where fontconfig looks without configuration: the system's local fonts as root, the
    user's own fonts otherwise."""
    if os.geteuid() == 0:
        return Path("/usr/local/share/fonts/muckwatch")
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "fonts" / "muckwatch"


def gb2312_characters() -> set[int]:
    """Every character GB 2312 encodes (6,763 hanzi and 682 symbols)."""
    chars: set[int] = set()
    for high in range(0xA1, 0xF8):
        for low in range(0xA1, 0xFF):
            try:
                chars.add(ord(bytes((high, low)).decode("gb2312")))
            except UnicodeDecodeError:
                continue
    return chars


def characters() -> set[int]:
    """What the font is cut down to (those of them the Noto font has)."""
    chars = gb2312_characters()
    for first, last in _EXTRA_RANGES:
        chars.update(range(first, last + 1))
    return chars


def _to_truetype(font) -> None:
    """CFF outlines → quadratic TrueType outlines (glyf/loca), in place."""
    from fontTools.pens.cu2quPen import Cu2QuPen
    from fontTools.pens.ttGlyphPen import TTGlyphPen
    from fontTools.ttLib import newTable

    order = font.getGlyphOrder()
    glyphs = font.getGlyphSet()
    glyf = newTable("glyf")
    glyf.glyphOrder = order
    glyf.glyphs = {}
    for name in order:
        pen = TTGlyphPen(glyphs)
        # 1 unit of 1000 per em: invisible at any print size.
        glyphs[name].draw(Cu2QuPen(pen, 1.0, reverse_direction=True))
        glyf[name] = pen.glyph()
    font["glyf"] = glyf
    font["loca"] = newTable("loca")
    maxp = font["maxp"]
    maxp.tableVersion = 0x00010000
    for attr in (
        "maxTwilightPoints",
        "maxStorage",
        "maxFunctionDefs",
        "maxInstructionDefs",
        "maxStackElements",
        "maxSizeOfInstructions",
        "maxComponentElements",
    ):
        setattr(maxp, attr, 0)
    maxp.maxZones = 1
    font["head"].glyphDataFormat = 0
    post = font["post"]
    post.formatType = 2.0
    post.extraNames, post.mapping = [], {}
    post.glyphOrder = order
    for table in ("CFF ", "VORG"):
        if table in font:
            del font[table]
    font.sfntVersion = "\x00\x01\x00\x00"


def file_name(family: str, style: str) -> str:
    return f"{family.replace(' ', '')}-{style}.ttf"


def _rename(font, family: str, style: str) -> None:
    full = f"{family} {style}" if style != "Regular" else family
    postscript = family.replace(" ", "") + "-" + style
    names = font["name"]
    for record in list(names.names):
        if record.nameID in (16, 17, 21, 22):  # typographic names: the family says it all
            names.removeNames(nameID=record.nameID)
    for name_id, value in ((1, family), (2, style), (3, postscript), (4, full), (6, postscript)):
        names.setName(value, name_id, 3, 1, 0x409)
        names.setName(value, name_id, 1, 0, 0)


def build_one(source: str, source_family: str, family: str, style: str, target: Path) -> Path:
    from fontTools import subset
    from fontTools.ttLib import TTCollection

    collection = TTCollection(source)
    families = [font["name"].getDebugName(1) for font in collection]
    font = collection[families.index(source_family)]
    options = subset.Options()
    options.desubroutinize = True
    options.layout_features = ["*"]
    options.name_IDs = ["*"]
    options.notdef_outline = True
    subsetter = subset.Subsetter(options)
    subsetter.populate(unicodes=characters())
    subsetter.subset(font)
    _to_truetype(font)
    _rename(font, family, style)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    font.save(partial)
    partial.replace(target)
    return target


def install(directory: Path | None = None, *, force: bool = False) -> list[Path]:
    """Build the missing weights into `directory` and refresh fontconfig's cache; the paths
    built (none when both were there already or the Noto source is not installed)."""
    directory = directory or default_dir()
    built = []
    for family, (source_family, sources) in _FAMILIES.items():
        for style, source in sources.items():
            target = directory / file_name(family, style)
            if target.exists() and not force:
                continue
            if not Path(source).exists():
                print(f"{source} is missing (fonts-noto-cjk): PDFs use the system font, slowly")
                continue
            print(f"building {target} from {source} (about a minute)", flush=True)
            built.append(build_one(source, source_family, family, style, target))
    if built:
        subprocess.run(["fc-cache", "-f", str(directory)], check=False)
    return built


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, help=f"target folder (default {default_dir()})")
    parser.add_argument("--force", action="store_true", help="rebuild even if present")
    args = parser.parse_args(argv)
    install(args.dir, force=args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
