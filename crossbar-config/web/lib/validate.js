// A small JSON Schema validator for the editor's live checks: the subset tables' schemas use
// (type, enum, const, properties, required, additionalProperties, items, min/max bounds,
// lengths, pattern, anyOf/oneOf/allOf, $ref to "#/$defs/..."). The component validates every
// put with a full validator; this one only gives feedback before Save, so an unknown keyword is
// ignored (the server still refuses what it misses).

const TYPES = {
  null: (v) => v === null,
  boolean: (v) => typeof v === "boolean",
  integer: (v) => typeof v === "number" && Number.isInteger(v),
  number: (v) => typeof v === "number" && Number.isFinite(v),
  string: (v) => typeof v === "string",
  array: (v) => Array.isArray(v),
  object: (v) => v !== null && typeof v === "object" && !Array.isArray(v) && !(v instanceof Uint8Array),
};

function pointerPart(name) {
  return String(name).replace(/~/g, "~0").replace(/\//g, "~1");
}

function equal(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

function resolve(root, schema) {
  if (schema && typeof schema.$ref === "string" && schema.$ref.startsWith("#/")) {
    let target = root;
    for (const part of schema.$ref.slice(2).split("/")) {
      target = target && target[part.replace(/~1/g, "/").replace(/~0/g, "~")];
    }
    return target || {};
  }
  return schema;
}

/** Errors of `value` against `schema` as [{pointer, message}], [] when it is valid. */
export function validate(schema, value, root = schema, pointer = "") {
  const errors = [];
  schema = resolve(root, schema);
  if (schema === true || schema === undefined || schema === null) return errors;
  if (schema === false) return [{ pointer, message: "no value is allowed here" }];
  const fail = (message, at = pointer) => errors.push({ pointer: at, message });
  if (schema.type !== undefined) {
    const types = Array.isArray(schema.type) ? schema.type : [schema.type];
    if (!types.some((t) => TYPES[t] && TYPES[t](value))) {
      fail(`must be ${types.join(" or ")}`);
      return errors;  // the other keywords would only repeat the point
    }
  }
  if (schema.enum && !schema.enum.some((e) => equal(e, value))) {
    fail(`must be one of ${schema.enum.map((e) => JSON.stringify(e)).join(", ")}`);
  }
  if ("const" in schema && !equal(schema.const, value)) fail(`must be ${JSON.stringify(schema.const)}`);
  if (typeof value === "number") {
    if (schema.minimum !== undefined && value < schema.minimum) fail(`must be >= ${schema.minimum}`);
    if (schema.maximum !== undefined && value > schema.maximum) fail(`must be <= ${schema.maximum}`);
    if (schema.exclusiveMinimum !== undefined && value <= schema.exclusiveMinimum) fail(`must be > ${schema.exclusiveMinimum}`);
    if (schema.exclusiveMaximum !== undefined && value >= schema.exclusiveMaximum) fail(`must be < ${schema.exclusiveMaximum}`);
  }
  if (typeof value === "string") {
    const length = [...value].length;
    if (schema.minLength !== undefined && length < schema.minLength) fail(`must have at least ${schema.minLength} character${schema.minLength === 1 ? "" : "s"}`);
    if (schema.maxLength !== undefined && length > schema.maxLength) fail(`must have at most ${schema.maxLength} character${schema.maxLength === 1 ? "" : "s"}`);
    if (schema.pattern !== undefined && !new RegExp(schema.pattern, "u").test(value)) fail(`must match ${schema.pattern}`);
  }
  if (Array.isArray(value)) {
    if (schema.minItems !== undefined && value.length < schema.minItems) fail(`must have at least ${schema.minItems} items`);
    if (schema.maxItems !== undefined && value.length > schema.maxItems) fail(`must have at most ${schema.maxItems} items`);
    if (schema.items !== undefined) {
      value.forEach((item, i) => errors.push(...validate(schema.items, item, root, `${pointer}/${i}`)));
    }
  }
  if (TYPES.object(value)) {
    for (const name of schema.required || []) {
      if (!(name in value)) fail("is required", `${pointer}/${pointerPart(name)}`);
    }
    const properties = schema.properties || {};
    for (const [name, item] of Object.entries(value)) {
      const at = `${pointer}/${pointerPart(name)}`;
      if (name in properties) errors.push(...validate(properties[name], item, root, at));
      else if (schema.additionalProperties === false) fail("is not an allowed property", at);
      else if (typeof schema.additionalProperties === "object") {
        errors.push(...validate(schema.additionalProperties, item, root, at));
      }
    }
  }
  for (const part of schema.allOf || []) errors.push(...validate(part, value, root, pointer));
  if (schema.anyOf && !schema.anyOf.some((part) => !validate(part, value, root, pointer).length)) {
    fail("matches none of the allowed shapes (anyOf)");
  }
  if (schema.oneOf && schema.oneOf.filter((part) => !validate(part, value, root, pointer).length).length !== 1) {
    fail("must match exactly one allowed shape (oneOf)");
  }
  return errors;
}
