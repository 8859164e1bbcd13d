// Typeset the formulas of every page with the KaTeX copy shipped in docs/assets/katex (no CDN).
// pymdownx.arithmatex (generic mode) wraps them in .arithmatex elements as \( ... \) / \[ ... \].
function attnkitRenderMath() {
  for (const el of document.querySelectorAll(".arithmatex")) {
    renderMathInElement(el, {
      delimiters: [
        { left: "\\(", right: "\\)", display: false },
        { left: "\\[", right: "\\]", display: true },
      ],
      throwOnError: false,
    });
  }
}
if (typeof document$ !== "undefined") {
  document$.subscribe(attnkitRenderMath); // Material's page-load observable
} else {
  document.addEventListener("DOMContentLoaded", attnkitRenderMath);
}
