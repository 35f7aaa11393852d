/* The journey step builder: show each step's fields for its type, add / remove / drag steps (SortableJS),
   keep the hidden positions in page order, and ask the server to check the draft (htmx) after each change. */
(function () {
  "use strict";
  const form = document.getElementById("builder-form");
  if (!form) return;
  const list = document.getElementById("steps");
  const total = form.querySelector("#id_steps-TOTAL_FORMS");
  const template = document.getElementById("step-template");

  function changed() {
    if (window.htmx) window.htmx.trigger(form, "builder-changed");
  }

  function showFields(card) {
    const type = card.querySelector("select[name$='-type']").value;
    card.querySelectorAll("[data-for]").forEach(function (el) {
      el.hidden = el.dataset.for.split(" ").indexOf(type) === -1;
    });
    const cond = card.querySelector("select[name$='-condition']");
    card.querySelectorAll("[data-condition]").forEach(function (el) {
      el.hidden = type !== "branch" || !cond || cond.value !== "attribute";
    });
    const label = card.querySelector(".step-type-label");
    const select = card.querySelector("select[name$='-type']");
    if (label) label.textContent = select.options[select.selectedIndex].text;
  }

  function renumber() {
    let n = 0;
    list.querySelectorAll(".step-card").forEach(function (card) {
      const deleted = card.querySelector("input[name$='-DELETE']");
      card.querySelector("input[name$='-position']").value = n;
      if (!deleted || !deleted.checked) {
        n += 1;
        card.querySelector(".step-number").textContent = n + ".";
      }
    });
  }

  function wire(card) {
    showFields(card);
    card.querySelector("select[name$='-type']").addEventListener("change", function () { showFields(card); });
    const cond = card.querySelector("select[name$='-condition']");
    if (cond) cond.addEventListener("change", function () { showFields(card); });
    card.querySelector(".step-remove").addEventListener("click", function () {
      const box = card.querySelector("input[name$='-DELETE']");
      box.checked = true;
      card.hidden = true;
      renumber();
      changed();
    });
  }

  list.querySelectorAll(".step-card").forEach(wire);
  renumber();

  document.getElementById("add-step").addEventListener("click", function () {
    const index = parseInt(total.value, 10);
    const html = template.innerHTML.replace(/__prefix__/g, String(index));
    const holder = document.createElement("div");
    holder.innerHTML = html.trim();
    const card = holder.firstElementChild;
    const type = document.getElementById("new-step-type").value;
    card.querySelector("select[name$='-type']").value = type;
    card.querySelector("input[name$='-id']").value = type.replace(/_/g, "-") + "-" + (index + 1);
    list.appendChild(card);
    total.value = index + 1;
    wire(card);
    renumber();
    if (window.htmx) window.htmx.process(card);
    changed();
    const first = card.querySelector("input[type=text], textarea");
    if (first) first.focus();
  });

  if (window.Sortable) {
    window.Sortable.create(list, {
      handle: ".step-handle",
      animation: 150,
      onEnd: function () { renumber(); changed(); },
    });
  }
})();
