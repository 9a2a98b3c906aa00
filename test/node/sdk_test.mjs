// Starts its own `tollgate dev` (simulator engine, free port, known key) and
// exercises it with the official OpenAI Node SDK: chat, streaming chat with
// usage, completions, embeddings, models, the Responses API and error cases. Exits non-zero on
// any failure. Usage: node sdk_test.mjs [path/to/tollgate]
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import assert from "node:assert/strict";
import OpenAI from "openai";

const bin = process.argv[2] ?? "../../bin/tollgate";
const key = "sk-node-sdk-test";
const model = "sim-tiny";

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function startDev(port, dataDir) {
  const child = spawn(bin, ["dev", "--listen", `127.0.0.1:${port}`, "--data", dataDir, "--api-key", key,
    "--engine", "sim", "--profile", "sim-tiny", "--no-prover"], { stdio: ["ignore", "ignore", "pipe"] });
  let log = "";
  const ready = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("tollgate dev did not start:\n" + log)), 60_000);
    child.stderr.on("data", (d) => {
      log += d;
      if (log.includes("Tollgate dev is serving")) { clearTimeout(timer); resolve(); }
    });
    child.once("exit", (code) => { clearTimeout(timer); reject(new Error(`tollgate dev exited ${code}:\n${log}`)); });
  });
  return { child, ready, log: () => log };
}

const results = [];
async function check(name, fn) {
  try {
    await fn();
    results.push([name, "ok"]);
    console.log(`ok   ${name}`);
  } catch (err) {
    results.push([name, err]);
    console.log(`FAIL ${name}: ${err?.stack ?? err}`);
  }
}

async function expectError(promise, status, code, param) {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof OpenAI.APIError, `not an APIError: ${err}`);
    assert.equal(err.status, status);
    assert.equal(err.code, code);
    assert.equal(err.param ?? null, param);
    assert.ok(err.message.length > 0);
    return;
  }
  assert.fail(`expected a ${status} error`);
}

const port = await freePort();
const dataDir = mkdtempSync(join(tmpdir(), "tollgate-node-"));
const dev = startDev(port, dataDir);
let exitCode = 1;
try {
  await dev.ready;
  const client = new OpenAI({ apiKey: key, baseURL: `http://127.0.0.1:${port}/v1`, maxRetries: 0 });

  await check("chat", async () => {
    const r = await client.chat.completions.create({ model, messages: [{ role: "user", content: "Say hello" }], max_tokens: 8 });
    assert.equal(r.object, "chat.completion");
    assert.equal(r.choices.length, 1);
    assert.ok(r.choices[0].message.content.length > 0);
    assert.ok(["stop", "length"].includes(r.choices[0].finish_reason));
    assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
    assert.ok(r.usage.completion_tokens >= 1 && r.usage.completion_tokens <= 8);
  });

  await check("chat with raw response headers", async () => {
    const { response } = await client.chat.completions
      .create({ model, messages: [{ role: "user", content: "hi" }], max_tokens: 2 })
      .withResponse();
    assert.match(response.headers.get("x-tollgate-receipt") ?? "", /^rcpt_/);
    assert.ok(response.headers.get("x-request-id"));
  });

  await check("streaming chat with usage", async () => {
    const stream = await client.chat.completions.create({
      model, messages: [{ role: "user", content: "Tell me a story" }], max_tokens: 12,
      stream: true, stream_options: { include_usage: true },
    });
    let text = "", usage = null, finish = null, chunks = 0;
    for await (const chunk of stream) {
      chunks++;
      if (chunk.choices.length > 0) {
        text += chunk.choices[0].delta.content ?? "";
        finish = chunk.choices[0].finish_reason ?? finish;
      }
      if (chunk.usage) usage = chunk.usage;
    }
    assert.ok(chunks >= 3, `only ${chunks} chunks`);
    assert.ok(text.length > 0);
    assert.ok(["stop", "length"].includes(finish));
    assert.ok(usage && usage.completion_tokens >= 1);
    assert.equal(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens);
  });

  await check("completions", async () => {
    const r = await client.completions.create({ model, prompt: "Once upon a time", max_tokens: 5 });
    assert.equal(r.object, "text_completion");
    assert.equal(r.choices.length, 1);
    assert.ok(r.usage.completion_tokens >= 1 && r.usage.completion_tokens <= 5);
  });

  await check("streaming completions", async () => {
    const stream = await client.completions.create({ model, prompt: "Once", max_tokens: 4, stream: true });
    let text = "";
    for await (const chunk of stream) text += chunk.choices[0]?.text ?? "";
    assert.ok(text.length > 0);
  });

  await check("embeddings (SDK default base64)", async () => {
    const r = await client.embeddings.create({ model, input: ["first", "second text"] });
    assert.equal(r.data.length, 2);
    const v = r.data[0].embedding;
    assert.ok(Array.isArray(v) && v.length > 0);
    const norm = v.reduce((s, x) => s + x * x, 0);
    assert.ok(Math.abs(norm - 1) < 1e-3, `norm² ${norm}`);
    assert.ok(r.usage.prompt_tokens >= 1);
  });

  await check("embeddings float string input", async () => {
    const r = await client.embeddings.create({ model, input: "single", encoding_format: "float" });
    assert.equal(r.data.length, 1);
  });

  await check("models", async () => {
    const list = await client.models.list();
    const ids = list.data.map((m) => m.id);
    assert.deepEqual(ids, [model]);
    const m = await client.models.retrieve(model);
    assert.equal(m.id, model);
  });

  await check("responses", async () => {
    const r = await client.responses.create({ model, input: "Tell me a story", instructions: "Be brief.", max_output_tokens: 12 });
    assert.equal(r.object, "response");
    assert.match(r.id, /^resp_/);
    assert.ok(["completed", "incomplete"].includes(r.status));
    assert.ok(r.output_text.length > 0);
    assert.equal(r.usage.total_tokens, r.usage.input_tokens + r.usage.output_tokens);
    const got = await client.responses.retrieve(r.id);
    assert.equal(got.output_text, r.output_text);
    await client.responses.delete(r.id);
    await expectError(client.responses.retrieve(r.id), 404, "response_not_found", null);
  });

  await check("streaming responses (SDK accumulator)", async () => {
    const first = await client.responses.create({ model, input: "Once", max_output_tokens: 6 });
    // responses.stream() rebuilds the response from the events and throws
    // on any event out of order or naming an unknown item or part.
    const stream = client.responses.stream({ model, input: "And then?", previous_response_id: first.id, max_output_tokens: 12 });
    let text = "", seq = -1;
    for await (const ev of stream) {
      assert.equal(ev.sequence_number, seq + 1);
      seq = ev.sequence_number;
      if (ev.type === "response.output_text.delta") text += ev.delta;
    }
    const final = await stream.finalResponse();
    assert.ok(text.length > 0);
    assert.equal(final.output_text, text);
    assert.equal(final.previous_response_id, first.id);
  });

  await check("error: responses duplicate key", async () => {
    const res = await fetch(`${client.baseURL}/responses`, {
      method: "POST", headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: `{"model":"${model}","input":"a","input":"b"}`,
    });
    assert.equal(res.status, 400);
    assert.equal((await res.json()).error.code, "invalid_json");
  });

  await check("error: wrong key", () =>
    expectError(new OpenAI({ apiKey: "sk-wrong", baseURL: client.baseURL, maxRetries: 0 }).models.list(), 401, "invalid_api_key", null));
  await check("error: unknown model", () =>
    expectError(client.chat.completions.create({ model: "gpt-nope", messages: [{ role: "user", content: "hi" }] }), 404, "model_not_found", "model"));
  await check("error: unknown model streaming", () =>
    expectError(client.chat.completions.create({ model: "gpt-nope", stream: true, messages: [{ role: "user", content: "hi" }] }), 404, "model_not_found", "model"));
  await check("error: missing messages", () =>
    expectError(client.chat.completions.create({ model }), 400, "missing_required_parameter", "messages"));
  await check("error: unknown role", () =>
    expectError(client.chat.completions.create({ model, messages: [{ role: "wizard", content: "hi" }] }), 400, "invalid_role", "messages[0].role"));
  await check("error: n > 1", () =>
    expectError(client.chat.completions.create({ model, n: 2, messages: [{ role: "user", content: "hi" }] }), 400, "unsupported_parameter", "n"));
  await check("error: temperature", () =>
    expectError(client.chat.completions.create({ model, temperature: 9, messages: [{ role: "user", content: "hi" }] }), 400, "invalid_value", "temperature"));
  await check("error: huge max_tokens", () =>
    expectError(client.completions.create({ model, prompt: "x", max_tokens: 10_000_000 }), 400, "invalid_value", "max_tokens"));
  await check("error: unsupported logprobs", () =>
    expectError(client.chat.completions.create({ model, logprobs: true, messages: [{ role: "user", content: "hi" }] }), 400, "unsupported_parameter", "logprobs"));

  const failed = results.filter(([, r]) => r !== "ok");
  console.log(`${results.length - failed.length}/${results.length} passed`);
  exitCode = failed.length === 0 ? 0 : 1;
} catch (err) {
  console.error(err);
} finally {
  dev.child.kill("SIGTERM");
  await new Promise((resolve) => (dev.child.exitCode !== null ? resolve() : dev.child.once("exit", resolve)));
  rmSync(dataDir, { recursive: true, force: true });
}
process.exit(exitCode);
