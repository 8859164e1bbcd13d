"""The page of ``GET /``: type a sentence, see its translation and its attention.

The attention view is the HTML report's (:mod:`attnkit.viz.report`): the same elements, stylesheet
and ``report.js``. After each translation the page writes the returned weights into the
``attnkit-data`` element, rebuilds the view's elements and runs ``report.js`` again on them.
Nothing is loaded from outside the server.
"""

from __future__ import annotations

import html
import json
from typing import Any

from attnkit.viz.report import attention_view_html, report_asset
from attnkit.viz.samples import KIND_TITLES

__all__ = ["index_page"]


def _script_json(data: Any) -> str:
    """JSON that is safe inside a <script> element."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


_EXTRA_CSS = """
textarea { width: 100%; font: inherit; padding: 0.4em; box-sizing: border-box; }
.row { display: flex; gap: 1em; align-items: center; margin: 0.6em 0; flex-wrap: wrap; }
#out { font-size: 1.2em; min-height: 1.5em; padding: 0.4em 0; }
#error { color: #b3261e; min-height: 1.2em; }
"""

_SCRIPT = """
(function () {
  "use strict";
  var $ = function (id) { return document.getElementById(id); };
  function run(code) {
    var s = document.createElement("script");
    s.textContent = code;
    document.body.appendChild(s);
    s.remove();
  }
  function show(samples) {
    var data = { samples: samples, kinds: KINDS };
    $("attnkit-data").textContent = JSON.stringify(data);
    $("attn-view").innerHTML = VIEW;  // fresh elements: no listeners left from the last view
    if (samples.length) { run(REPORT_JS); }
    else { $("attn-caption").textContent = NO_WEIGHTS; }
  }
  function translate(event) {
    if (event) { event.preventDefault(); }
    var text = $("src").value.trim();
    if (!text) { return; }
    var headers = { "Content-Type": "application/json" };
    var key = $("key") ? $("key").value : "";
    if (key) { headers["Authorization"] = "Bearer " + key; }
    var beam = Number($("beam").value);
    $("error").textContent = "";
    $("go").disabled = true;
    fetch("v1/translate", {
      method: "POST", headers: headers,
      body: JSON.stringify({ text: text, attention: ATTENTION, beam: beam || null })
    }).then(function (r) {
      return r.json().then(function (body) { return { ok: r.ok, body: body }; });
    }).then(function (res) {
      if (!res.ok) { throw new Error(res.body.error || "request failed"); }
      var t = res.body.translations[0];
      $("out").textContent = t.text;
      show(t.attention || []);
    }).catch(function (err) {
      $("error").textContent = String(err.message || err);
    }).then(function () { $("go").disabled = false; });
  }
  $("form").addEventListener("submit", translate);
}());
"""


def index_page(model: dict[str, Any], *, need_key: bool = False) -> str:
    """The page as one HTML string.

    Args:
        model: the ``/v1/models`` entry of the served model (``id``, ``kind``, ``engine``).
        need_key: show an API key field (the server requires one).
    """
    title = f"attnkit serve: {model.get('id', '')}"
    head = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<link rel="icon" href="data:,"><title>{html.escape(title)}</title>'
        f"<style>\n{report_asset('report.css')}{_EXTRA_CSS}</style></head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>"
    )
    about = (
        f'<p class="muted">{html.escape(str(model.get("kind")))} model, engine '
        f"{html.escape(str(model.get('engine')))}"
        + (f", {html.escape(str(model['quantize']))}" if model.get("quantize") else "")
        + '. API: <a href="openapi.json">openapi.json</a>.</p>'
    )
    if model.get("kind") != "translation":
        return head + about + "</body></html>\n"
    key = (
        '<label>API key <input id="key" type="password" autocomplete="off"></label>'
        if need_key
        else ""
    )
    form = (
        '<form id="form"><textarea id="src" rows="3" placeholder="a sentence to translate">'
        "</textarea>"
        '<div class="row"><label>beam <select id="beam"><option value="">run default</option>'
        '<option value="1">1 (greedy)</option><option value="4">4</option>'
        f'<option value="8">8</option></select></label>{key}'
        '<button id="go" type="submit">Translate</button></div></form>'
        '<div id="out"></div><div id="error"></div>'
    )
    view = attention_view_html()
    # Only attnkit's own engine returns attention weights; other engines translate without.
    weights = model.get("engine", "attnkit") == "attnkit"
    no_weights = (
        "no attention weights"
        if weights
        else f"the {model.get('engine')} engine returns no attention weights"
    )
    script = (
        f"var ATTENTION = {_script_json(weights)};\n"
        f"var NO_WEIGHTS = {_script_json(no_weights)};\n"
        f"var KINDS = {_script_json(dict(KIND_TITLES))};\n"
        f"var VIEW = {_script_json(view)};\n"
        f"var REPORT_JS = {_script_json(report_asset('report.js'))};\n" + _SCRIPT
    )
    return (
        head
        + about
        + form
        + f'<h2>Attention</h2><div id="attn-view">{view}</div>'
        + '<script type="application/json" id="attnkit-data">{"samples":[]}</script>'
        + f"\n<script>\n{script}</script>\n</body></html>\n"
    )
