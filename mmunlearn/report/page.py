"""`index.html` of the report: one file with everything inline (style, script, figures as data
URIs), so it opens offline and can be sent as it is."""
from __future__ import annotations

import base64
import html
from pathlib import Path

STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2rem auto;max-width:70rem;color:#222;padding:0 1rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85rem}th,td{padding:.25rem .5rem;border-bottom:1px solid #eee;text-align:right}
th{cursor:pointer;background:#f4f4f4;user-select:none}th:first-child,td:first-child{text-align:left}
.ok{color:#17692d}.fail{color:#b00020;font-weight:600}
figure{display:inline-block;margin:.5rem;vertical-align:top;max-width:100%}figure img{max-width:100%}
figcaption{font-size:.8rem;color:#555}footer{margin-top:2rem;font-size:.75rem;color:#666}
"""

SORT = """
document.querySelectorAll('table.sortable th').forEach(function(th, col){
  th.addEventListener('click', function(){
    var body = th.closest('table').tBodies[0], asc = th.dataset.asc !== '1';
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function(a, b){
      var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v, nx = parseFloat(x), ny = parseFloat(y);
      var c = (isNaN(nx) || isNaN(ny)) ? x.localeCompare(y) : nx - ny;
      return asc ? c : -c;
    });
    rows.forEach(function(r){ body.appendChild(r); });
    th.dataset.asc = asc ? '1' : '0';
  });
});
"""


def _cell(value, digits: int = 3) -> str:
    if isinstance(value, float):
        return f'<td data-v="{value!r}">{value:.{digits}f}</td>'
    text = html.escape(str(value))
    return f'<td data-v="{text}">{text}</td>'


def ranking_table(ranking: dict, columns) -> str:
    """Per method: UQS and each metric with its rank; sortable by any column."""
    head = ["method"] + [f"{c}{suffix}" for c in columns for suffix in ("", " rank")]
    rows = []
    for method in sorted(ranking, key=lambda m: ranking[m]["UQS_rank"]):
        r = ranking[method]
        cells = [_cell(method)] + [x for c in columns for x in (_cell(float(r[c])), _cell(int(r[f"{c}_rank"])))]
        rows.append(f'<tr data-method="{html.escape(method)}">{"".join(cells)}</tr>')
    return (f'<table id="ranking" class="sortable"><thead><tr>{"".join(f"<th>{html.escape(h)}</th>" for h in head)}'
            f'</tr></thead><tbody>{"".join(rows)}</tbody></table>')


def sanity_list(sanity: dict) -> str:
    items = [f'<li class="{"ok" if c["ok"] else "fail"}">{"PASS" if c["ok"] else "FAIL"} '
             f'<b>{html.escape(c["name"])}</b>: {html.escape(str(c.get("detail", "")))}</li>'
             for c in sanity.get("checks", [])]
    verdict = "all checks pass" if sanity.get("ok") else f'{sanity.get("n_failed", "?")} check(s) failed'
    return f'<p class="{"ok" if sanity.get("ok") else "fail"}">Sanity: {verdict}.</p><ul id="sanity">{"".join(items)}</ul>'


def figure_tags(fig_dir: Path, made: list[tuple[str, str]]) -> str:
    out = []
    for name, caption in made:
        data = base64.b64encode((fig_dir / f"{name}.png").read_bytes()).decode("ascii")
        out.append(f'<figure id="fig-{html.escape(name)}"><img alt="{html.escape(caption)}" '
                   f'src="data:image/png;base64,{data}"><figcaption>{html.escape(caption)} '
                   f'(<code>figures/{html.escape(name)}.png|svg</code>)</figcaption></figure>')
    return "".join(out)


def render(title: str, summary: str, ranking: str, sanity: str, findings: list[str], figs: str,
           footer: str) -> str:
    items = "".join(f"<li>{html.escape(f)}</li>" for f in findings)
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1"><title>{html.escape(title)}</title>'
            f'<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1><p>{html.escape(summary)}</p>'
            f'<h2>Leaderboard</h2>{ranking}<h2>Sanity checks</h2>{sanity}<h2>Findings</h2><ul id="findings">{items}</ul>'
            f'<h2>Figures</h2>{figs}<footer>{footer}</footer><script>{SORT}</script></body></html>\n')
