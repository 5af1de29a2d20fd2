// The seed tutorial over HTTP from Node.js (18+), with the built-in fetch and no dependencies.
// Registers the network once, then asks for the gradients w.r.t. all inputs and the weights
// (GradOperation(get_all=True, get_by_list=True)), with the result tensors in base64.
// Usage: node examples/node_client.mjs [BASE_URL]     (GRADSERVE_API_KEY for a keyed server)

const base = process.argv[2] ?? process.env.GRADSERVE_URL ?? "http://127.0.0.1:8000";
const headers = { "Content-Type": "application/json" };
if (process.env.GRADSERVE_API_KEY) headers.Authorization = `Bearer ${process.env.GRADSERVE_API_KEY}`;

const network = {
  format: "gradnet/1",
  name: "tutorial-net",
  inputs: [{ name: "x" }, { name: "y" }],
  parameters: [{ name: "z", value: { dtype: "float32", shape: [1], data: [1.0] }, requires_grad: true }],
  nodes: [
    { name: "xz", op: "Mul", inputs: ["x", "z"] },
    { name: "out", op: "MatMul", inputs: ["xz", "y"] },
  ],
  outputs: ["out"],
};

// A float32 tensor as raw little-endian bytes in base64 (the "b64" tensor form).
function toB64(values, shape) {
  const bytes = Buffer.from(new Float32Array(values).buffer);
  return { dtype: "float32", shape, b64: bytes.toString("base64") };
}

function fromTensor(t) {
  if (t.b64 === undefined) return { shape: t.shape, data: t.data };
  const buf = Buffer.from(t.b64, "base64");
  const data = Array.from(new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4));
  return { shape: t.shape, data };
}

async function call(path, body) {
  const res = await fetch(`${base}${path}`, { method: "POST", headers, body: JSON.stringify(body) });
  const json = await res.json();
  if (!res.ok) throw new Error(`${path} -> ${res.status}: ${JSON.stringify(json.error)}`);
  return json;
}

const { network_id } = await call("/networks", network);
const reply = await call("/grad", {
  network_id,
  inputs: {
    x: toB64([0.8, 0.6, 0.2, 1.8, 1.3, 1.1], [2, 3]),
    y: toB64([0.11, 3.3, 1.1, 1.1, 0.2, 1.4, 1.1, 2.2, 0.3], [3, 3]),
  },
  get_all: true,
  get_by_list: true,
  output_encoding: "b64",
});

const [inputGrads, weightGrads] = reply.gradients;
console.log(JSON.stringify({
  network_id,
  gradient_names: reply.gradient_names,
  gradients: [inputGrads.map(fromTensor), weightGrads.map(fromTensor)],
}));
