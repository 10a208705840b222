// The official Node SDK's `webhooks.*` against a mailroom server, with a real receiver: an
// HTTP server started here on 127.0.0.1 that records what it is sent. Signatures are checked
// with the SDK's own `webhooks.verify` (standardwebhooks underneath).
// Usage: RESEND_BASE_URL=http://127.0.0.1:PORT KEY=re_... node node_webhooks.mjs
import { Resend } from 'resend';
import { check, sleep } from './check.mjs';
import http from 'node:http';
import crypto from 'node:crypto';

const base = process.env.RESEND_BASE_URL;
const resend = new Resend(process.env.KEY, { baseUrl: base });
const email = (to) => ({ from: 'Acme <hello@acme.test>', to, subject: 'Hi', html: '<p>hi</p>', tags: [{ name: 'kind', value: 'welcome' }] });

// The receiver: answers 500 to the first request of each svix-id listed in `failFirst`.
const received = [];
const failFirst = new Set();
const server = http.createServer((req, res) => {
  let body = '';
  req.on('data', (c) => (body += c));
  req.on('end', () => {
    received.push({ headers: req.headers, body, at: Date.now() });
    const t = JSON.parse(body).type;
    if (failFirst.has(t)) {
      failFirst.delete(t);
      res.writeHead(500).end('not yet');
    } else {
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
    }
  });
});
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const endpoint = `http://127.0.0.1:${server.address().port}/hooks`;
const waitFor = async (pred, ms = 20000) => {
  for (let t = 0; t < ms; t += 50) {
    const found = received.filter(pred);
    if (found.length) return found;
    await sleep(50);
  }
  return [];
};
const verify = (r, secret) => {
  try {
    resend.webhooks.verify({
      payload: r.body,
      headers: { id: r.headers['svix-id'], timestamp: r.headers['svix-timestamp'], signature: r.headers['svix-signature'] },
      webhookSecret: secret,
    });
    return true;
  } catch (e) {
    return e.message;
  }
};

const bad = await resend.webhooks.create({ endpoint: 'ftp://nope', events: ['email.sent'] });
check('webhooks.create refuses a bad endpoint', bad.error && bad.error.statusCode === 422, bad);
const badEvents = await resend.webhooks.create({ endpoint, events: ['email.exploded'] });
check('webhooks.create refuses an unknown event', badEvents.error && badEvents.error.name === 'validation_error', badEvents);

const created = await resend.webhooks.create({ endpoint, events: ['email.sent', 'email.delivered', 'email.bounced'] });
check('webhooks.create', created.data && created.data.object === 'webhook' && created.data.signing_secret.startsWith('whsec_'), created);
const id = created.data.id;
const secret = created.data.signing_secret;
const got = await resend.webhooks.get(id);
check('webhooks.get', got.data && got.data.endpoint === endpoint && got.data.status === 'enabled' && got.data.events.length === 3, got);
const list = await resend.webhooks.list();
check('webhooks.list', list.data && list.data.data.some((w) => w.id === id) && list.data.data.every((w) => !('signing_secret' in w)), list);
const updated = await resend.webhooks.update(id, { events: ['email.sent', 'email.delivered', 'email.bounced', 'suppression.added'] });
check('webhooks.update', updated.data && updated.data.id === id, updated);

failFirst.add('email.delivered');
const sent = await resend.emails.send(email('delivered+hook@resend.dev'));
const bounced = await resend.emails.send(email('bounced+hook@resend.dev'));
const delivered = await waitFor((r) => JSON.parse(r.body).type === 'email.delivered' && r.headers['svix-id'], 20000);
check('email.delivered arrives', delivered.length >= 1, received.map((r) => r.body));
const d = JSON.parse(delivered[0].body);
check('payload shape', d.data.email_id === sent.data.id && d.data.to[0] === 'delivered+hook@resend.dev' && d.data.tags.kind === 'welcome' && d.data.from === 'Acme <hello@acme.test>' && typeof d.created_at === 'string', d);
check('webhooks.verify accepts our signature', verify(delivered[0], secret) === true, verify(delivered[0], secret));
const tampered = { ...delivered[0], body: delivered[0].body.replace('delivered+hook', 'delivered+evil') };
check('a tampered body fails verify', verify(tampered, secret) !== true, null);
// A stale timestamp, correctly signed, is refused for its age.
const stale = String(Math.floor(Date.now() / 1000) - 3600);
const key = Buffer.from(secret.slice('whsec_'.length), 'base64');
const sig = crypto.createHmac('sha256', key).update(`${delivered[0].headers['svix-id']}.${stale}.${delivered[0].body}`).digest('base64');
const old = { ...delivered[0], headers: { ...delivered[0].headers, 'svix-timestamp': stale, 'svix-signature': `v1,${sig}` } };
const staleResult = verify(old, secret);
check('a stale timestamp fails verify', staleResult !== true && /old|timestamp/i.test(staleResult), staleResult);

// The 500 was retried 5 s later with the same svix-id.
const retried = await waitFor((r) => JSON.parse(r.body).type === 'email.delivered' && received.filter((x) => x.headers['svix-id'] === r.headers['svix-id']).length >= 2, 20000);
check('a failed delivery is retried with the same svix-id', retried.length >= 2, received.map((r) => [r.headers['svix-id'], JSON.parse(r.body).type]));
const gap = retried[retried.length - 1].at - retried[0].at;
check('the retry waits the schedule (5 s)', gap >= 4500 && gap < 15000, gap);

const b = (await waitFor((r) => JSON.parse(r.body).type === 'email.bounced'))[0];
const bb = JSON.parse(b.body);
check('email.bounced carries bounce{}', bb.data.email_id === bounced.data.id && bb.data.bounce.type === 'Permanent' && typeof bb.data.bounce.subType === 'string' && typeof bb.data.bounce.message === 'string', bb);
const sup = (await waitFor((r) => JSON.parse(r.body).type === 'suppression.added'))[0];
check('suppression.added', JSON.parse(sup.body).data.origin === 'bounce', sup && sup.body);

const events = await resend.webhooks.events.list({ webhookId: id, limit: 10 });
check('webhooks.events.list', events.data && events.data.data.length >= 4 && events.data.data.every((e) => e.id.startsWith('msg_')), events);
const msgId = delivered[0].headers['svix-id'];
// The receiver has a request a moment before the server has recorded its answer.
let ev;
for (let i = 0; i < 100; i++) {
  ev = await resend.webhooks.events.get({ webhookId: id, eventId: msgId });
  if (ev.data && ev.data.status === 'success') break;
  await sleep(50);
}
check('webhooks.events.get', ev.data && ev.data.object === 'webhook_event' && ev.data.status === 'success' && ev.data.payload.type === 'email.delivered', ev);
const attempts = await resend.webhooks.events.attempts.list({ webhookId: id, eventId: msgId });
check('webhooks.events.attempts.list', attempts.data && attempts.data.data.length === 2 && attempts.data.data[0].http_status_code === 200 && attempts.data.data[1].http_status_code === 500, attempts);
const [newest, oldest] = attempts.data.data;
const older = await resend.webhooks.events.attempts.list({ webhookId: id, eventId: msgId, limit: 1, after: newest.id });
const newer = await resend.webhooks.events.attempts.list({ webhookId: id, eventId: msgId, limit: 1, before: oldest.id });
const none = await resend.webhooks.events.attempts.list({ webhookId: id, eventId: msgId, before: newest.id });
check('attempts page by after and before', older.data && older.data.data.length === 1 && older.data.data[0].id === oldest.id && older.data.has_more === false && newer.data && newer.data.data.length === 1 && newer.data.data[0].id === newest.id && newer.data.has_more === false && none.data && none.data.data.length === 0, [older, newer, none]);
const before = received.length;
const replay = await resend.webhooks.events.replay({ webhookId: id, eventId: msgId });
check('webhooks.events.replay', replay.data && replay.data.id === msgId, replay);
const replayed = await waitFor((r) => r.headers['svix-id'] === msgId && received.indexOf(r) >= before);
check('the replay is delivered with the same id', replayed.length === 1, replayed.length);

const rotated = await resend.webhooks.rotateSigningSecret(id);
check('webhooks.rotateSigningSecret', rotated.data && rotated.data.signing_secret.startsWith('whsec_') && rotated.data.signing_secret !== secret, rotated);
const third = await resend.emails.send(email('delivered+rotated@resend.dev'));
const after = (await waitFor((r) => JSON.parse(r.body).data.email_id === third.data.id && JSON.parse(r.body).type === 'email.sent'))[0];
check('after rotation the new secret verifies', verify(after, rotated.data.signing_secret) === true, after && after.headers);
check('and the old one still does for 24 h', verify(after, secret) === true, after && after.headers);

const removed = await resend.webhooks.remove(id);
check('webhooks.remove', removed.data && removed.data.deleted === true, removed);
const gone = await resend.webhooks.get(id);
check('a removed webhook is gone', gone.error && gone.error.statusCode === 404, gone);
server.close();
