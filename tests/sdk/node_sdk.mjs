// Drives a mailroom server with the official Node SDK (npm `resend` 6.x), changing only the
// base URL. Usage: RESEND_BASE_URL=http://127.0.0.1:PORT KEY=re_... node node_sdk.mjs
// Prints one line per check; exits 1 on the first failure.
import { Resend } from 'resend';
import { check, sleep } from './check.mjs';

const base = process.env.RESEND_BASE_URL;
const resend = new Resend(process.env.KEY, { baseUrl: base });
const email = (to, extra = {}) => ({ from: 'Acme <hello@acme.test>', to, subject: 'Hi', html: '<p>hi</p>', ...extra });

const sent = await resend.emails.send(email('delivered@resend.dev'));
check('emails.send', sent.error === null && /^[0-9a-f-]{36}$/.test(sent.data.id), sent);
const got = await resend.emails.get(sent.data.id);
check('emails.get', got.data && got.data.object === 'email' && got.data.id === sent.data.id, got);
const list = await resend.emails.list({ limit: 5 });
check('emails.list', list.data && list.data.object === 'list' && Array.isArray(list.data.data)
  && list.data.data[0].id === sent.data.id && list.data.data[0].message_id === got.data.message_id, list);

const strict = await resend.batch.send([email('a@example.com'), email('not-an-address')]);
check('batch.send strict refuses all', strict.error && strict.error.name === 'validation_error', strict);
const permissive = await resend.batch.send([email('a@example.com'), email('nope'), email('b@example.com')], { batchValidation: 'permissive' });
check('batch.send permissive', permissive.data && permissive.data.data.length === 2 && permissive.data.errors[0].index === 1, permissive);
const page1 = await resend.emails.list({ limit: 1 });
const page2 = await resend.emails.list({ limit: 1, after: page1.data.data[0].id });
check('emails.list pagination', page1.data.has_more === true && page2.data.data.length === 1 && page2.data.data[0].id !== page1.data.data[0].id, { page1, page2 });

const key = `welcome/${Date.now()}`;
const first = await resend.emails.send(email('a@example.com'), { idempotencyKey: key });
const replay = await resend.emails.send(email('a@example.com'), { idempotencyKey: key });
check('idempotent replay', first.data && replay.data && first.data.id === replay.data.id, { first, replay });
const conflict = await resend.emails.send(email('b@example.com'), { idempotencyKey: key });
check('idempotent conflict', conflict.error && conflict.error.name === 'invalid_idempotent_request' && conflict.error.statusCode === 409, conflict);

const scheduled = await resend.emails.send(email('a@example.com', { scheduledAt: 'in 1 hour' }));
check('schedule', scheduled.data !== null, scheduled);
const updated = await resend.emails.update({ id: scheduled.data.id, scheduledAt: 'tomorrow at 9am' });
check('emails.update', updated.data && updated.data.id === scheduled.data.id, updated);
const canceled = await resend.emails.cancel(scheduled.data.id);
check('emails.cancel', canceled.data && canceled.data.id === scheduled.data.id, canceled);
const after = await resend.emails.get(scheduled.data.id);
check('canceled last_event', after.data.last_event === 'canceled', after);

const invalid = await resend.emails.send({ from: 'Acme <hello@acme.test>', subject: 'x', html: 'x' });
check('validation error', invalid.error && invalid.error.name === 'missing_required_field', invalid);
const unknown = await resend.emails.get('00000000-0000-7000-8000-000000000000');
check('unknown id', unknown.error && unknown.error.name === 'not_found' && unknown.error.statusCode === 404, unknown);
const wrong = await new Resend('re_wrong', { baseUrl: base }).emails.send(email('a@example.com'));
check('wrong key', wrong.error && wrong.error.name === 'invalid_api_key', wrong);

const outcomes = { 'delivered+node@resend.dev': 'delivered', 'bounced+node@resend.dev': 'bounced', 'complained+node@resend.dev': 'complained', 'suppressed+node@resend.dev': 'suppressed' };
const ids = {};
for (const to of Object.keys(outcomes)) ids[to] = (await resend.emails.send(email(to))).data.id;
for (const [to, want] of Object.entries(outcomes)) {
  let last;
  for (let i = 0; i < 100 && last !== want; i++) {
    last = (await resend.emails.get(ids[to])).data.last_event;
    if (last !== want) await sleep(100);
  }
  check(`test address ${to}`, last === want, { to, last });
}
