"use strict";
const $ = (id) => document.getElementById(id);
function el(tag, props, ...children) {
  const node = Object.assign(document.createElement(tag), props || {});
  node.append(...children);
  return node;
}

// The bit of Markdown the descriptions use (paragraphs, "- " lists, `code`, **bold**),
// built as DOM nodes: text is never parsed as HTML.
function inline(text) {
  return text.split(/(`[^`]+`|\*\*[^*]+\*\*)/).filter(Boolean).map((part) => {
    if (part.startsWith("`")) return el("code", {textContent: part.slice(1, -1)});
    if (part.startsWith("**")) return el("strong", {textContent: part.slice(2, -2)});
    return part;
  });
}
function markdown(text) {
  return (text || "").split(/\n\s*\n/).map((block) => {
    const lines = block.trim().split("\n");
    if (lines.every((line) => line.startsWith("- "))) {
      return el("ul", {}, ...lines.map((line) => el("li", {}, ...inline(line.slice(2)))));
    }
    return el("p", {}, ...inline(lines.join(" ")));
  });
}

function parameters(list) {
  const rows = list.map((p) => el("tr", {},
    el("td", {}, el("code", {textContent: p.name})),
    el("td", {textContent: p.in + (p.required ? ", required" : "")}),
    el("td", {}, p.schema && p.schema.enum ? `one of ${p.schema.enum.join(", ")}. ` : "",
      ...inline(p.description || ""))));
  const head = el("tr", {}, ...["Parameter", "In", "Description"].map((t) => el("th", {textContent: t})));
  return el("table", {}, head, ...rows);
}

function operation(spec, path, method, op, shared) {
  const secured = (op.security ?? spec.security ?? []).length > 0;
  const section = el("section", {className: "op"},
    el("h3", {}, el("span", {className: "method " + method, textContent: method}), el("code", {textContent: path}),
      " — " + (op.summary || "") + (secured ? " (needs the bearer token)" : "")),
    ...markdown(op.description));
  section.dataset.path = path;
  const all = [...shared, ...(op.parameters || [])];
  if (all.length) section.append(parameters(all));
  for (const [media, content] of Object.entries((op.requestBody && op.requestBody.content) || {})) {
    const about = content.schema && content.schema.description;
    section.append(el("p", {}, "Body ", el("code", {textContent: media}), ...(about ? [": ", ...inline(about)] : [])));
    for (const example of Object.values(content.examples || {})) {
      section.append(el("details", {}, el("summary", {textContent: example.summary || "example"}),
        el("pre", {textContent: JSON.stringify(example.value, null, 2)})));
    }
  }
  const codes = Object.entries(op.responses || {}).map(([code, response]) =>
    el("li", {}, el("code", {textContent: code}), " ", ...inline(response.description || "")));
  section.append(el("ul", {className: "responses"}, ...codes));
  return section;
}

async function main() {
  try {
    const spec = await (await fetch("openapi.json")).json();
    $("title").textContent = `${spec.info.title} ${spec.info.version}`;
    $("description").replaceChildren(...inline(spec.info.description || ""));
    for (const [path, item] of Object.entries(spec.paths)) {
      for (const method of ["get", "put", "post", "delete", "patch"]) {
        if (item[method]) $("operations").append(operation(spec, path, method, item[method], item.parameters || []));
      }
    }
  } catch (e) {
    $("title").textContent = "Could not load openapi.json: " + e;
  }
}
main();
