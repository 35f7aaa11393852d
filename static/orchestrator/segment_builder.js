/* The segment condition builder: rows of conditions written as JSON into #id_conditions, and a live count
   and sample from the admin's preview endpoint while editing. No framework: the admin's own markup. */
(function () {
  "use strict";
  const script = document.currentScript;
  const previewUrl = script.dataset.previewUrl;
  const options = JSON.parse(document.getElementById("segment-builder-options").textContent);
  const textarea = document.getElementById("id_conditions");
  const match = document.getElementById("id_match");
  const tbody = document.querySelector("#segment-rows tbody");
  if (!textarea || !tbody) return;

  const KINDS = [
    ["attribute", "Attribute"],
    ["timezone", "Time zone"],
    ["locale", "Locale"],
    ["reachable", "Reachable on"],
    ["opted_in", "Opted in on"],
    ["event", "Did event"],
    ["message", "Got a message"],
  ];
  const OPS = {
    attribute: [["eq", "is"], ["ne", "is not"], ["in", "is one of"], ["exists", "is set"],
      ["gt", "more than"], ["gte", "at least"], ["lt", "less than"], ["lte", "at most"]],
    column: [["eq", "is"], ["ne", "is not"], ["in", "is one of"], ["exists", "is set"]],
    reachable: [["eq", "is"], ["ne", "is not"], ["in", "any of"], ["exists", "any channel"]],
    opted_in: [["eq", "yes"], ["ne", "no"]],
  };

  let rows = [];
  try {
    const parsed = JSON.parse(textarea.value || "[]");
    rows = Array.isArray(parsed) ? parsed : [];
  } catch (e) {
    rows = [];
  }

  function kindOf(cond) {
    if ("attribute" in cond) return "attribute";
    if ("event" in cond) return "event";
    if ("message" in cond) return "message";
    return cond.field || "attribute";
  }

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    Object.entries(attrs || {}).forEach(([k, v]) => {
      if (k === "text") node.textContent = v;
      else if (v !== undefined && v !== null) node.setAttribute(k, v);
    });
    (children || []).forEach((c) => node.appendChild(c));
    return node;
  }

  function select(name, choices, value) {
    const s = el("select", { "data-name": name, "aria-label": name });
    choices.forEach(([v, label]) => {
      const o = el("option", { value: v, text: label });
      if (String(v) === String(value)) o.selected = true;
      s.appendChild(o);
    });
    return s;
  }

  function input(name, value, placeholder, cls) {
    return el("input", {
      type: "text", "data-name": name, value: value === undefined ? "" : value,
      placeholder: placeholder || "", "aria-label": name, class: cls || "",
    });
  }

  function show(value) {
    if (value === undefined || value === null) return "";
    if (Array.isArray(value)) return value.map(show).join(", ");
    if (typeof value === "object" && "ago" in value) return value.ago;
    return String(value);
  }

  function parseScalar(text) {
    const t = text.trim();
    if (t === "true") return true;
    if (t === "false") return false;
    if (t !== "" && !isNaN(Number(t)) && /^-?\d/.test(t)) return Number(t);
    return t;
  }

  function parseValue(op, text) {
    if (op === "in") return text.split(",").map((s) => parseScalar(s)).filter((v) => v !== "");
    if (["gt", "gte", "lt", "lte"].includes(op) && /^P/i.test(text.trim())) return { ago: text.trim().toUpperCase() };
    return parseScalar(text);
  }

  function rowCells(cond) {
    const kind = kindOf(cond);
    const cells = [];
    if (kind === "attribute") {
      cells.push(input("attribute", cond.attribute, "attribute, e.g. plan"));
      cells.push(select("op", OPS.attribute, cond.op || "eq"));
      if (cond.op !== "exists") cells.push(input("value", show(cond.value), "value"));
    } else if (kind === "timezone" || kind === "locale") {
      cells.push(select("op", OPS.column, cond.op || "eq"));
      if (cond.op !== "exists") {
        cells.push(input("value", show(cond.value), kind === "locale" ? "pt-BR" : "Europe/Paris"));
      }
    } else if (kind === "reachable") {
      cells.push(select("op", OPS.reachable, cond.op || "eq"));
      if (cond.op !== "exists") cells.push(input("value", show(cond.value), options.channels.join(", ")));
    } else if (kind === "opted_in") {
      cells.push(select("op", OPS.opted_in, cond.op || "eq"));
      cells.push(select("value", options.channels.map((c) => [c, c]), cond.value || "email"));
      cells.push(select("purpose", [["", "any purpose"]].concat(options.purposes.map((p) => [p, p])), cond.purpose || ""));
    } else if (kind === "event") {
      cells.push(input("event", cond.event, "event name, e.g. purchase"));
      cells.push(el("span", { text: "at least", class: "orch-muted" }));
      cells.push(input("min_count", cond.min_count || 1, "1", "orch-narrow"));
      cells.push(el("span", { text: "times within", class: "orch-muted" }));
      cells.push(input("within", cond.within || "", "P30D (blank: ever)", "orch-narrow"));
    } else {
      cells.push(select("message", [["received", "received"], ["opened", "opened"], ["clicked", "clicked"]], cond.message || "received"));
      cells.push(input("journey", cond.journey || "", "of journey (slug)"));
      cells.push(el("span", { text: "within", class: "orch-muted" }));
      cells.push(input("within", cond.within || "", "P30D (blank: ever)", "orch-narrow"));
    }
    return cells;
  }

  function readRow(tr, previous) {
    const get = (name) => {
      const node = tr.querySelector(`[data-name="${name}"]`);
      return node ? node.value : undefined;
    };
    const kind = get("kind");
    const cond = {};
    if (kind === "attribute") {
      cond.attribute = (get("attribute") || "").trim();
      cond.op = get("op") || "eq";
      if (cond.op !== "exists") cond.value = parseValue(cond.op, get("value") || "");
    } else if (kind === "timezone" || kind === "locale" || kind === "reachable") {
      cond.field = kind;
      cond.op = get("op") || "eq";
      if (cond.op !== "exists") {
        const text = get("value") || "";
        cond.value = cond.op === "in" ? text.split(",").map((s) => s.trim()).filter(Boolean) : text.trim();
      }
    } else if (kind === "opted_in") {
      cond.field = "opted_in";
      cond.op = get("op") || "eq";
      cond.value = get("value") || "email";
      if (get("purpose")) cond.purpose = get("purpose");
    } else if (kind === "event") {
      cond.event = (get("event") || "").trim();
      const n = parseInt(get("min_count") || "1", 10);
      if (n > 1 || isNaN(n)) cond.min_count = isNaN(n) ? get("min_count") : n;
      if ((get("within") || "").trim()) cond.within = get("within").trim().toUpperCase();
    } else {
      cond.message = get("message") || "received";
      if ((get("journey") || "").trim()) cond.journey = get("journey").trim();
      else if (previous && previous.campaign) cond.campaign = previous.campaign;
      if ((get("within") || "").trim()) cond.within = get("within").trim().toUpperCase();
    }
    if (tr.querySelector('[data-name="negate"]').checked) cond.negate = true;
    return cond;
  }

  function render() {
    tbody.innerHTML = "";
    rows.forEach((cond, index) => {
      const tr = el("tr", { class: "orch-condition", "data-index": index });
      const negate = el("input", { type: "checkbox", "data-name": "negate", "aria-label": "not" });
      negate.checked = !!cond.negate;
      tr.appendChild(el("td", {}, [el("label", {}, [negate, document.createTextNode(" not")])]));
      tr.appendChild(el("td", {}, [select("kind", KINDS, kindOf(cond))]));
      const td = el("td", {});
      rowCells(cond).forEach((c) => { td.appendChild(c); td.appendChild(document.createTextNode(" ")); });
      tr.appendChild(td);
      const remove = el("button", { type: "button", class: "button", text: "Remove", "aria-label": "remove condition" });
      remove.addEventListener("click", () => { rows.splice(index, 1); render(); changed(); });
      tr.appendChild(el("td", {}, [remove]));
      tr.addEventListener("change", (event) => {
        const name = event.target.dataset.name;
        rows[index] = readRow(tr, rows[index]);
        if (name === "kind") {
          const kind = event.target.value;
          rows[index] = kind === "attribute" ? { attribute: "", op: "eq", value: "" }
            : kind === "event" ? { event: "" }
            : kind === "message" ? { message: "received" }
            : kind === "opted_in" ? { field: "opted_in", op: "eq", value: "email" }
            : { field: kind, op: "eq", value: "" };
        }
        if (name === "kind" || name === "op") render();
        changed();
      });
      tr.addEventListener("input", () => { rows[index] = readRow(tr, rows[index]); changed(); });
      tbody.appendChild(tr);
    });
  }

  let timer = null;
  let sequence = 0;
  function changed() {
    textarea.value = JSON.stringify(rows, null, 1);
    clearTimeout(timer);
    timer = setTimeout(preview, 250);
  }

  function csrf() {
    const field = document.querySelector("input[name=csrfmiddlewaretoken]");
    return field ? field.value : "";
  }

  function preview() {
    const mine = ++sequence;
    let conditions;
    try {
      conditions = JSON.parse(textarea.value || "[]");
    } catch (e) {
      showErrors({ conditions: ["The JSON below does not parse."] });
      return;
    }
    fetch(previewUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf() },
      body: JSON.stringify({ match: match ? match.value : "all", conditions: conditions }),
    }).then((r) => r.json()).then((data) => {
      if (mine !== sequence) return; // a newer edit is on its way
      if (data.errors) { showErrors(data.errors); return; }
      showErrors({});
      document.getElementById("segment-count").textContent = data.count.toLocaleString();
      document.getElementById("segment-count-label").textContent = data.count === 1 ? "recipient matches" : "recipients match";
      document.getElementById("segment-summary").textContent = "— " + data.summary;
      document.getElementById("segment-sample").textContent = data.sample.length ? data.sample.join(", ") : "nobody";
    }).catch(() => showErrors({ "": ["Could not reach the server for a count."] }));
  }

  function showErrors(errors) {
    const list = document.getElementById("segment-errors");
    list.innerHTML = "";
    Object.entries(errors).forEach(([field, messages]) => {
      list.appendChild(el("li", { text: (field ? field + ": " : "") + messages.join(" ") }));
    });
    if (Object.keys(errors).length) document.getElementById("segment-count").textContent = "?";
  }

  document.getElementById("segment-add").addEventListener("click", () => {
    rows.push({ attribute: "", op: "eq", value: "" });
    render();
    changed();
  });
  if (match) match.addEventListener("change", changed);
  textarea.addEventListener("change", () => {
    try {
      const parsed = JSON.parse(textarea.value || "[]");
      if (Array.isArray(parsed)) { rows = parsed; render(); }
    } catch (e) { /* shown by the preview */ }
    clearTimeout(timer);
    timer = setTimeout(preview, 250);
  });
  render();
  preview();
})();
