"""The PDF documents' CJK font (core/cjk_fonts.py): built by `make install`, covering GB 2312,
and a character outside it still printed, from the full Noto font."""

from __future__ import annotations

import io
import shutil

import pypdf
import pytest
from fontTools.ttLib import TTFont

from core.cjk_fonts import FAMILY, SERIF_FAMILY, default_dir, gb2312_characters
from tests.evidence.test_evidence import embedded_fonts

REGULAR = default_dir() / "MuckWatchCJKSC-Regular.ttf"
SERIF = default_dir() / "MuckWatchSerifCJKSC-Regular.ttf"
pytestmark = pytest.mark.skipif(
    not shutil.which("fc-list"), reason="needs fontconfig (make install)"
)


@pytest.mark.parametrize(("path", "family"), [(REGULAR, FAMILY), (SERIF, SERIF_FAMILY)])
def test_the_built_font_covers_gb2312_with_truetype_outlines(path, family):
    assert path.exists(), "make install builds it: python -m core.cjk_fonts"
    font = TTFont(path)
    assert "glyf" in font and "CFF " not in font
    assert font["name"].getDebugName(1) == family
    cmap = font.getBestCmap()
    gb2312 = gb2312_characters()
    assert len(gb2312) == 7445
    assert [chr(c) for c in sorted(gb2312) if c not in cmap] == []
    for text in "渣土车违法超速粤京沪深圳市城市管理和综合执法局℃№（）：；0123456789ABC":
        assert ord(text) in cmap, text


def test_a_character_outside_gb2312_falls_back_to_noto():
    from weasyprint import HTML

    html = (
        '<body style=\'font-family: "MuckWatch CJK SC", "Noto Sans CJK SC"\'>'
        "深圳市建筑垃圾运输公司 喆</body>"
    )
    pdf = HTML(string=html).write_pdf()
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    fonts = {name.replace("-", "") for name in embedded_fonts(reader)}
    assert any("MuckWatchCJKSC" in n for n in fonts), fonts
    assert any("NotoSansCJKSC" in n for n in fonts), fonts
    text = reader.pages[0].extract_text().replace(" ", "")
    assert "深圳市建筑垃圾运输公司喆" in text
