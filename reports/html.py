"""One self-contained HTML leaderboard: CSS and JS inline, figures as base64 PNG, so the
file opens anywhere with no network and no other files.

Tables with class `sortable` sort when a header is clicked (numbers by the `data-v` value
of each cell, text otherwise). The inline script sets `#js-status[data-status]` to "ok"
once it ran, or to "error: ..." if any script error happens, so a headless browser can
assert it ran cleanly; opened as `leaderboard.html#selftest` it also sorts the leaderboard
by a header click and records in `data-selftest` whether the order came out right.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable
from typing import Any

import pandas as pd

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5em auto;max-width:1250px;
padding:0 1em;color:#222}

h1{margin-bottom:.2em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0;font-size:13px}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f3f3f3}table.sortable th{cursor:pointer;user-select:none}table.sortable th:hover{background:#e6eefc}
th.asc::after{content:" \\25B2"}th.desc::after{content:" \\25BC"}
tr.reference td{background:#fff8e1;font-style:italic}
.badge{font-size:11px;background:#f0ad4e;color:#fff;border-radius:3px;padding:0 4px}
.note{color:#555;font-size:13px}img{max-width:100%;border:1px solid #eee;margin:.4em 0}
#js-status{font-size:11px;color:#888}
.failed td{background:#fdecea}.warning{color:#a40000;font-weight:600}code{background:#f5f5f5;padding:0 3px}
"""

_JS = """
(function(){
  var status=document.getElementById('js-status');
  window.addEventListener('error',function(e){status.dataset.status='error: '+e.message;
    status.textContent=status.dataset.status;});
  function key(td){var v=td.getAttribute('data-v');if(v!==null&&v!==''&&!isNaN(+v))return +v;
    return td.textContent.trim().toLowerCase();}
  function sortBy(th){
    var table=th.closest('table'),body=table.tBodies[0],col=th.cellIndex,asc=!th.classList.contains('asc');
    var rows=Array.prototype.slice.call(body.rows);
    rows.sort(function(a,b){var x=key(a.cells[col]),y=key(b.cells[col]);
      if(typeof x!==typeof y){x=String(x);y=String(y);} return (x<y?-1:x>y?1:0)*(asc?1:-1);});
    rows.forEach(function(r){body.appendChild(r);});
    Array.prototype.forEach.call(table.tHead.rows[0].cells,function(c){c.classList.remove('asc','desc');});
    th.classList.add(asc?'asc':'desc');
  }
  var tables=document.querySelectorAll('table.sortable');
  tables.forEach(function(t){Array.prototype.forEach.call(t.tHead.rows[0].cells,function(th){th.addEventListener('click',function(){sortBy(th);
    });});});
  if(location.hash==='#selftest'){
    var t=document.getElementById('leaderboard'),th=t.tHead.rows[0].cells[2],col=th.cellIndex;
    th.click();var a=Array.prototype.map.call(t.tBodies[0].rows,function(r){return key(r.cells[col]);});
    th.click();var d=Array.prototype.map.call(t.tBodies[0].rows,function(r){return key(r.cells[col]);});
    var up=a.every(function(v,i){return i===0||a[i-1]<=v;}),down=d.every(function(v,i){return i===0||d[i-1]>=v;});
    status.dataset.selftest=(up&&down)?'ok':'wrong order';
  }
  if(!status.dataset.status||status.dataset.status==='pending'){status.dataset.status='ok';}
  status.textContent='script ran: '+status.dataset.status+', '+tables.length+' sortable table(s)';
})();
"""


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def image(png: bytes | None, alt: str) -> str:
    """An <img> with the PNG inline as a data: URL (no file beside the HTML needed)."""
    if not png:
        return ""
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def table(
    shown: pd.DataFrame,
    sort_keys: pd.DataFrame | None = None,
    table_id: str | None = None,
    row_attrs: Iterable[dict[str, str]] | None = None,
    sortable: bool = True,
) -> str:
    """An HTML table of text cells; `sort_keys` (same shape) gives each cell's numeric sort
    value; `row_attrs` adds attributes per row (class, data-*)."""
    attrs = list(row_attrs) if row_attrs is not None else [{} for _ in range(len(shown))]
    head = "".join(f"<th>{esc(c)}</th>" for c in shown.columns)
    body = []
    for i, row in enumerate(shown.itertuples(index=False)):
        cells = []
        for j, value in enumerate(row):
            v = sort_keys.iat[i, j] if sort_keys is not None else None
            dv = (
                f' data-v="{v:.12g}"'
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                else ""
            )
            cells.append(f"<td{dv}>{esc(value)}</td>")
        extra = "".join(f' {k}="{esc(v)}"' for k, v in attrs[i].items())
        body.append(f"<tr{extra}>{''.join(cells)}</tr>")
    ident = f' id="{esc(table_id)}"' if table_id else ""
    cls = ' class="sortable"' if sortable else ""
    return f"<table{ident}{cls}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def definition_list(items: dict[str, Any]) -> str:
    return "<table>" + "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in items.items()) + "</table>"


def page(title: str, sections: list[str]) -> str:
    """The whole document: inline CSS, the sections, the inline script last."""
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head><body>'
        f'<h1>{esc(title)}</h1><p id="js-status" data-status="pending">script did not run</p>'
        + "\n".join(sections)
        + f"<script>{_JS}</script></body></html>\n"
    )
