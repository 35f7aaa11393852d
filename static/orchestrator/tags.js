/* Tag inputs (orchestrator.forms.TagsInput): Tagify on every .orch-tags box; the box keeps "a, b" so the
   form reads the same with or without JavaScript. */
(function () {
  function init() {
    if (typeof Tagify === "undefined") return;
    document.querySelectorAll("input.orch-tags").forEach(function (input) {
      if (input._tagify) return;
      input._tagify = new Tagify(input, {
        delimiters: ",",
        duplicates: false,
        editTags: 1,
        originalInputValueFormat: function (values) {
          return values.map(function (v) { return v.value; }).join(", ");
        },
      });
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
