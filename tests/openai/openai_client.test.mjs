// accllm-gateway through OpenAI's official Node client: what the client parses, raises and
// streams is what our gateway sends. Run by tests/python/openai_node_client_test.py, which starts
// a daemon (stories260K, its context stretched to 4096) and the gateway (keys key-a and key-b, one request in flight per key).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';

const baseURL = `${process.env.GATEWAY_URL}/v1`;
const client = new OpenAI({ baseURL, apiKey: 'key-a', maxRetries: 0 });
const other = new OpenAI({ baseURL, apiKey: 'key-b', maxRetries: 0 });
const model = 'stories-4k';
const greedy = { model, prompt: 'Once upon a time', max_tokens: 24, temperature: 0 };

test('models.list names the served model with its context', async () => {
  const models = [];
  for await (const m of client.models.list()) models.push(m);
  assert.equal(models.length, 1);
  assert.equal(models[0].id, model);
  assert.equal(models[0].object, 'model');
  assert.equal(models[0].context_length, 4096);
  const one = await client.models.retrieve(model);
  assert.equal(one.id, model);
  await assert.rejects(client.models.retrieve('gpt-4o'), OpenAI.NotFoundError);
});

test('completions: whole and streamed agree, with usage', async () => {
  const whole = await client.completions.create(greedy);
  assert.equal(whole.object, 'text_completion');
  assert.equal(whole.choices[0].finish_reason, 'length');
  assert.equal(whole.usage.completion_tokens, 24);
  assert.ok(whole.choices[0].text.length > 0);

  const stream = await client.completions.create({ ...greedy, stream: true, stream_options: { include_usage: true } });
  let text = '';
  let usage = null;
  let finish = null;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      text += c.text;
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  assert.equal(text, whole.choices[0].text);
  assert.equal(finish, 'length');
  assert.deepEqual(usage, whole.usage);
});

test('chat: whole and streamed agree; the stream opens with the role', async () => {
  const body = { model, messages: [{ role: 'user', content: 'Lily and Ben' }], max_tokens: 20, temperature: 0 };
  const whole = await client.chat.completions.create(body);
  assert.equal(whole.object, 'chat.completion');
  assert.equal(whole.choices[0].message.role, 'assistant');
  const stream = await client.chat.completions.create({ ...body, stream: true });
  let text = '';
  let role = null;
  for await (const chunk of stream) {
    const delta = chunk.choices[0]?.delta ?? {};
    if (delta.role) role = delta.role;
    text += delta.content ?? '';
  }
  assert.equal(role, 'assistant');
  assert.equal(text, whole.choices[0].message.content);
  // With no max_tokens a chat runs to the daemon's default length (or its end).
  const open = await client.chat.completions.create({ model, messages: body.messages, temperature: 0 });
  assert.ok(open.usage.completion_tokens > 20, `${open.usage.completion_tokens} tokens`);
  assert.ok(open.choices[0].message.content.startsWith(whole.choices[0].message.content));
  // The client's own stream helper assembles the same message.
  const runner = client.chat.completions.stream(body);
  const final = await runner.finalChatCompletion();
  assert.equal(final.choices[0].message.content, whole.choices[0].message.content);
});

test('logprobs: completions (legacy shape) and chat (content list)', async () => {
  const c = await client.completions.create({ ...greedy, max_tokens: 6, logprobs: 2 });
  const lp = c.choices[0].logprobs;
  assert.equal(lp.tokens.length, 6);
  assert.equal(lp.token_logprobs.length, 6);
  assert.equal(lp.tokens.join(''), c.choices[0].text);
  for (const top of lp.top_logprobs) assert.equal(Object.keys(top).length, 2);
  // Greedy: the chosen token is the likeliest.
  lp.token_logprobs.forEach((v, i) => assert.equal(v, Math.max(...Object.values(lp.top_logprobs[i]))));

  const chat = await client.chat.completions.create({
    model, messages: [{ role: 'user', content: 'Once' }], max_tokens: 5, temperature: 0, logprobs: true, top_logprobs: 3,
  });
  const content = chat.choices[0].logprobs.content;
  assert.equal(content.length, chat.usage.completion_tokens);
  for (const t of content) {
    assert.equal(t.top_logprobs.length, 3);
    assert.ok(t.logprob <= 0);
    assert.deepEqual(t.bytes, [...Buffer.from(t.token, 'utf8')]);
  }
});

test('echo with max_tokens 0 scores the prompt (how lm-evaluation-harness asks)', async () => {
  const c = await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 0, echo: true, logprobs: 1 });
  assert.equal(c.choices[0].text, 'Once upon a time');
  assert.equal(c.usage.completion_tokens, 0);
  assert.ok(c.choices[0].logprobs.token_logprobs.every((v) => typeof v === 'number' && v <= 0));
});

test('stop, n and seed', async () => {
  const stopped = await client.completions.create({ ...greedy, max_tokens: 40, stop: ['Lily'] });
  assert.equal(stopped.choices[0].finish_reason, 'stop');
  assert.ok(!stopped.choices[0].text.includes('Lily'));
  const sampled = { model, prompt: 'Once upon a time', max_tokens: 16, temperature: 1, n: 2, seed: 5 };
  const a = await client.completions.create(sampled);
  const b = await client.completions.create(sampled);
  assert.equal(a.choices.length, 2);
  assert.deepEqual(a.choices.map((c) => c.index), [0, 1]);
  assert.deepEqual(a.choices.map((c) => c.text), b.choices.map((c) => c.text));
  const chat = { model, messages: [{ role: 'user', content: 'Lily' }], max_tokens: 16, temperature: 1, seed: 9 };
  const x = await client.chat.completions.create(chat);
  const y = await client.chat.completions.create(chat);
  assert.equal(x.choices[0].message.content, y.choices[0].message.content);
});

test('errors surface as the client\'s exception classes', async () => {
  await assert.rejects(client.completions.create({ ...greedy, model: 'gpt-4o' }), (e) => {
    assert.ok(e instanceof OpenAI.NotFoundError, e.constructor.name);
    assert.equal(e.status, 404);
    assert.equal(e.code, 'model_not_found');
    return true;
  });
  await assert.rejects(client.completions.create({ ...greedy, temperature: 7 }), (e) => {
    assert.ok(e instanceof OpenAI.BadRequestError, e.constructor.name);
    assert.equal(e.param, 'temperature');
    return true;
  });
  await assert.rejects(client.chat.completions.create({ model, messages: [] }), OpenAI.BadRequestError);
  const stranger = new OpenAI({ baseURL, apiKey: 'nope', maxRetries: 0 });
  await assert.rejects(stranger.completions.create(greedy), OpenAI.AuthenticationError);
});

test('a key over its stream limit gets 429, raised as RateLimitError', async () => {
  const controller = new AbortController();
  const long = await client.completions.create(
    { model, prompt: 'Once', max_tokens: 4000, ignore_eos: true, stream: true }, { signal: controller.signal });
  const iterator = long[Symbol.asyncIterator]();
  await iterator.next();  // the first stream is running
  await assert.rejects(client.completions.create(greedy), (e) => {
    assert.ok(e instanceof OpenAI.RateLimitError, e.constructor.name);
    assert.equal(e.status, 429);
    assert.ok(e.headers.get('retry-after'));
    return true;
  });
  const fine = await other.completions.create(greedy);  // another key is not limited
  assert.equal(fine.choices.length, 1);
  controller.abort();  // (the stream's iterator then ends with an abort error; nothing to check)
});
