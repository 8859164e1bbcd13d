// attnkit report: the interactive attention view. Inlined into the HTML by attnkit.viz.report;
// reads the JSON embedded with id "attnkit-data" and draws one weight matrix as an HTML table.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("attnkit-data").textContent);
  var samples = data.samples || [];
  var titles = data.kinds || {};
  var $ = function (id) { return document.getElementById(id); };
  var controls = {
    sentence: $("attn-sentence"), kind: $("attn-kind"), layer: $("attn-layer"), head: $("attn-head")
  };
  var table = $("attn-matrix"), strip = $("attn-strip"), status = $("attn-status");
  if (!samples.length || !table) { return; }

  function fill(select, options, keep) {
    var previous = keep ? select.value : null;
    select.textContent = "";
    options.forEach(function (o) {
      var opt = document.createElement("option");
      opt.value = String(o.value);
      opt.textContent = o.label;
      select.appendChild(opt);
    });
    var values = options.map(function (o) { return String(o.value); });
    select.value = values.indexOf(previous) >= 0 ? previous : values[0];
  }
  function range(n, word) {
    var out = [];
    for (var i = 0; i < n; i++) { out.push({ value: i, label: word + " " + (i + 1) }); }
    return out;
  }
  function sample() { return samples[Number(controls.sentence.value)]; }
  function layers() { return sample().weights[controls.kind.value]; }
  function axes(s, kind) {
    // [query tokens, key tokens] of one attention kind; decoder self-attention is named by the
    // tokens each step reads (BOS, then the previous output), cross-attention by those it emits
    if (kind === "encoder") { return [s.src_tokens, s.src_tokens]; }
    if (kind === "self") { return [s.tgt_inputs, s.tgt_inputs]; }
    return [s.tgt_tokens, s.src_tokens];
  }
  function refreshKinds() {
    var kinds = Object.keys(sample().weights);
    fill(controls.kind, kinds.map(function (k) { return { value: k, label: titles[k] || k }; }), true);
    if (!kinds.length) {
      [controls.layer, controls.head].forEach(function (c) { c.textContent = ""; });
      table.textContent = "";
      current = null;
      $("attn-caption").textContent = "no attention weights for this sentence";
      return;
    }
    refreshLayers();
  }
  function refreshLayers() {
    fill(controls.layer, range(layers().length, "layer"), true);
    refreshHeads();
  }
  function refreshHeads() {
    fill(controls.head, range(layers()[Number(controls.layer.value)].length, "head"), true);
    draw();
  }
  function cell(tag, text, attrs) {
    var node = document.createElement(tag);
    if (text !== null) { node.textContent = text; }
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    return node;
  }
  function colour(w, max) {
    var a = max > 0 ? Math.max(0, w) / max : 0;
    return "rgba(179, 38, 30, " + a.toFixed(3) + ")";
  }
  var current = null; // {matrix, queries, keys}

  function draw() {
    var s = sample(), kind = controls.kind.value;
    var layer = Number(controls.layer.value), head = Number(controls.head.value);
    var matrix = s.weights[kind][layer][head];
    var ax = axes(s, kind), queries = ax[0], keys = ax[1];
    var max = 0;
    matrix.forEach(function (row) { row.forEach(function (w) { if (w > max) { max = w; } }); });
    table.textContent = "";
    var head_row = document.createElement("tr");
    head_row.appendChild(cell("th", "", { "class": "corner" }));
    keys.forEach(function (t, j) { head_row.appendChild(cell("th", t, { "data-col": j })); });
    var thead = document.createElement("thead");
    thead.appendChild(head_row);
    var tbody = document.createElement("tbody");
    matrix.forEach(function (row, i) {
      var tr = document.createElement("tr");
      tr.appendChild(cell("th", queries[i], { "data-row": i }));
      row.forEach(function (w, j) {
        var td = cell("td", null, { "data-row": i, "data-col": j, "data-w": String(w) });
        td.style.background = colour(w, max);
        td.title = queries[i] + " \u2192 " + keys[j] + ": " + w.toFixed(4);
        tr.appendChild(td);
      });
      tbody.appendChild(tr);
    });
    table.appendChild(thead);
    table.appendChild(tbody);
    table.dataset.sentence = controls.sentence.value;
    table.dataset.kind = kind;
    table.dataset.layer = String(layer);
    table.dataset.head = String(head);
    $("attn-caption").textContent = (titles[kind] || kind) + ", layer " + (layer + 1) +
      ", head " + (head + 1) + ": rows are queries, columns keys; darkest = " + max.toFixed(3);
    current = { matrix: matrix, queries: queries, keys: keys };
    clear();
  }
  function clear() {
    table.classList.remove("focus");
    Array.prototype.forEach.call(table.querySelectorAll(".hl"), function (n) {
      n.classList.remove("hl");
    });
    strip.textContent = "";
    status.textContent = "hover a token to see where it attends";
  }
  function mark(selector) {
    Array.prototype.forEach.call(table.querySelectorAll(selector), function (n) {
      n.classList.add("hl");
    });
  }
  function showStrip(tokens, weights, label) {
    strip.textContent = "";
    var max = Math.max.apply(null, weights.concat([0]));
    tokens.forEach(function (t, k) {
      var span = cell("span", t, { title: weights[k].toFixed(4) });
      span.style.background = colour(weights[k], max);
      strip.appendChild(span);
    });
    status.textContent = label;
  }
  table.addEventListener("mouseover", function (event) {
    var node = event.target.closest("th, td");
    if (!node || !current) { return; }
    clear();
    var i = node.getAttribute("data-row"), j = node.getAttribute("data-col");
    if (node.tagName === "TD") {
      mark('th[data-row="' + i + '"], th[data-col="' + j + '"]');
      node.classList.add("hl");
      status.textContent = current.queries[i] + " \u2192 " + current.keys[j] + ": " +
        current.matrix[i][j].toFixed(4);
    } else if (i !== null) {
      table.classList.add("focus");
      mark('[data-row="' + i + '"]');
      showStrip(current.keys, current.matrix[i], "query " + current.queries[i] +
        " attends to these keys");
    } else if (j !== null) {
      table.classList.add("focus");
      mark('[data-col="' + j + '"]');
      var column = current.matrix.map(function (row) { return row[j]; });
      showStrip(current.queries, column, "key " + current.keys[j] + " is attended by these queries");
    }
  });
  table.addEventListener("mouseleave", clear);
  controls.sentence.addEventListener("change", refreshKinds);
  controls.kind.addEventListener("change", refreshLayers);
  controls.layer.addEventListener("change", refreshHeads);
  controls.head.addEventListener("change", draw);

  fill(controls.sentence, samples.map(function (s, k) {
    return { value: k, label: (k + 1) + ". " + s.source };
  }), false);
  refreshKinds();
}());
