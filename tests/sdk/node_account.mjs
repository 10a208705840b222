// The account's resources through the official Node SDK (npm `resend` 6.x): the suppression
// list (add, list by origin and page by cursor, get and remove by id or address, the batch add
// and remove, a real bounce landing on the list with its email as the source), the request
// logs, the API keys.
// Usage: RESEND_BASE_URL=http://127.0.0.1:PORT KEY=re_... node node_account.mjs
import { Resend } from 'resend';
import { check, sleep } from './check.mjs';

const resend = new Resend(process.env.KEY, { baseUrl: process.env.RESEND_BASE_URL });
const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

const added = await resend.suppressions.add({ email: 'Node.One+tag@Example.com' });
check('suppressions.add', added.error === null && added.data.object === 'suppression' && uuid.test(added.data.id), added);
const again = await resend.suppressions.add({ email: 'node.one+tag@example.com' });
check('suppressions.add of a listed address answers its entry', again.data && again.data.id === added.data.id, again);
const byId = await resend.suppressions.get(added.data.id);
check('suppressions.get by id', byId.data && byId.data.object === 'suppression' && byId.data.email === 'node.one+tag@example.com'
  && byId.data.origin === 'manual' && byId.data.source_id === null && !Number.isNaN(Date.parse(byId.data.created_at)), byId);
const byEmail = await resend.suppressions.get('node.one+tag@example.com');
check('suppressions.get by address', byEmail.data && byEmail.data.id === added.data.id, byEmail);

const batch = await resend.suppressions.batch.add({ emails: ['node.b@example.com', 'node.c@example.com', 'NODE.B@example.com'] });
check('suppressions.batch.add collapses repeats', batch.data && batch.data.data.length === 2 && batch.data.data.every((s) => uuid.test(s.id)), batch);
const manual = await resend.suppressions.list({ origin: 'manual', limit: 2 });
check('suppressions.list', manual.data && manual.data.object === 'list' && manual.data.data.length === 2 && manual.data.has_more === true
  && manual.data.data.every((s) => s.origin === 'manual' && !('object' in s)), manual);
const next = await resend.suppressions.list({ origin: 'manual', limit: 2, after: manual.data.data[1].id });
check('suppressions.list after a cursor', next.data && next.data.data.length === 1 && next.data.has_more === false
  && !manual.data.data.some((s) => s.id === next.data.data[0].id), next);
const back = await resend.suppressions.list({ origin: 'manual', limit: 1, before: next.data.data[0].id });
check('suppressions.list before a cursor', back.data && back.data.data[0].id === manual.data.data[1].id && back.data.has_more === true, back);

// A real bounce (the sandbox's bounced@ address) lands on the list with its email.
const bounced = await resend.emails.send({ from: 'Acme <hello@acme.test>', to: 'bounced+supnode@resend.dev', subject: 'x', html: 'x' });
let last;
for (let i = 0; i < 100 && last !== 'bounced'; i++) {
  last = (await resend.emails.get(bounced.data.id)).data.last_event;
  if (last !== 'bounced') await sleep(100);
}
const bounces = await resend.suppressions.list({ origin: 'bounce', limit: 100 });
const entry = bounces.data && bounces.data.data.find((s) => s.email === 'bounced+supnode@resend.dev');
check('a bounce is listed with its email', last === 'bounced' && entry && entry.source_id === bounced.data.id, { last, bounces });

const removed = await resend.suppressions.remove('node.one+tag@example.com');
check('suppressions.remove by address', removed.data && removed.data.id === added.data.id && removed.data.deleted === true, removed);
const gone = await resend.suppressions.get(added.data.id);
check('a removed entry is not found', gone.error && gone.error.name === 'not_found' && gone.error.statusCode === 404, gone);
const removedById = await resend.suppressions.remove(entry.id);
check('suppressions.remove by id', removedById.data && removedById.data.deleted === true, removedById);
const many = await resend.suppressions.batch.remove({ ids: [batch.data.data[0].id, added.data.id] });
check('suppressions.batch.remove leaves out misses', many.data && many.data.data.length === 1 && many.data.data[0].id === batch.data.data[0].id, many);
const byEmails = await resend.suppressions.batch.remove({ emails: ['node.c@example.com'] });
check('suppressions.batch.remove by address', byEmails.data && byEmails.data.data.length === 1 && byEmails.data.data[0].deleted === true, byEmails);
const invalid = await resend.suppressions.add({ email: 'not an address' });
check('an invalid address is refused', invalid.error && invalid.error.name === 'validation_error' && invalid.error.statusCode === 422, invalid);
const empty = await resend.suppressions.list({ origin: 'manual' });
check('the manual list is empty again', empty.data && empty.data.data.length === 0 && empty.data.has_more === false, empty);

// The request logs of the calls above, as `logs.*` reads them: newest first, paged with the
// hosted API's cursors (`after` goes older, `before` comes back), one by id.
const logs = await resend.logs.list({ limit: 3 });
check('logs.list', logs.data && logs.data.object === 'list' && logs.data.data.length === 3 && logs.data.has_more === true
  && logs.data.data.every((l) => uuid.test(l.id) && typeof l.response_status === 'number' && l.endpoint && l.method), logs);
const older = await resend.logs.list({ limit: 3, after: logs.data.data[2].id });
check('logs.list after a cursor goes older', older.data && older.data.data.length === 3
  && Date.parse(older.data.data[0].created_at) <= Date.parse(logs.data.data[2].created_at)
  && !older.data.data.some((l) => logs.data.data.some((k) => k.id === l.id)), older);
const newer = await resend.logs.list({ limit: 1, before: older.data.data[0].id });
check('logs.list before a cursor comes back', newer.data && newer.data.data[0].id === logs.data.data[2].id, newer);
const one = await resend.logs.get(older.data.data[0].id);
check('logs.get', one.data && one.data.object === 'log' && one.data.id === older.data.data[0].id
  && one.data.response_status === older.data.data[0].response_status, one);
const addLog = (await resend.logs.list({ limit: 100 })).data.data.find((l) => l.method === 'POST' && l.endpoint === '/suppressions');
const addLogFull = await resend.logs.get(addLog.id);
check('logs.get keeps the request body as JSON', addLogFull.data && typeof addLogFull.data.request_body === 'object'
  && addLogFull.data.request_body !== null && 'email' in addLogFull.data.request_body, addLogFull);

// API keys: create, rename (`apiKeys.update`), list, remove; a renamed key still works.
const created = await resend.apiKeys.create({ name: 'ci' });
check('apiKeys.create', created.data && uuid.test(created.data.id) && created.data.token.startsWith('re_'), created);
const renamed = await resend.apiKeys.update(created.data.id, { name: 'ci (renamed)' });
check('apiKeys.update', renamed.data && renamed.data.object === 'api_key' && renamed.data.id === created.data.id, renamed);
const keys = await resend.apiKeys.list();
check('apiKeys.list shows the new name', keys.data && keys.data.data.some((k) => k.id === created.data.id && k.name === 'ci (renamed)'), keys);
check('apiKeys.list: a key never used has last_used_at null, the key in use a time',
  keys.data.data.some((k) => k.id === created.data.id && k.last_used_at === null)
  && keys.data.data.some((k) => typeof k.last_used_at === 'string' && Math.abs(Date.parse(k.last_used_at) - Date.now()) < 600_000), keys);
const withIt = await new Resend(created.data.token, { baseUrl: process.env.RESEND_BASE_URL }).suppressions.list();
check('a renamed key still works', withIt.data && withIt.data.object === 'list', withIt);
// Its use is written in the background, once a minute at most.
let usedAt = null;
for (let i = 0; i < 50 && !usedAt; i += 1) {
  usedAt = (await resend.apiKeys.list()).data.data.find((k) => k.id === created.data.id).last_used_at;
  if (!usedAt) await new Promise((r) => setTimeout(r, 100));
}
check('a key records its last use', usedAt && Math.abs(Date.parse(usedAt) - Date.now()) < 600_000, usedAt);
const tooLong = await resend.apiKeys.update(created.data.id, { name: 'x'.repeat(51) });
check('a name over 50 characters is refused', tooLong.error && tooLong.error.statusCode === 422, tooLong);
await resend.apiKeys.remove(created.data.id);
const gone2 = await resend.apiKeys.update(created.data.id, { name: 'late' });
check('a removed key is not renamed', gone2.error && gone2.error.name === 'not_found', gone2);

// Email metrics (`emails.metrics`): the bounced email above counted, alone and by day in Tokyo.
const all = await resend.emails.metrics();
check('emails.metrics', all.data && all.data.object === 'metrics' && all.data.metrics.length === 22 && all.data.granularity === 'daily'
  && all.data.totals.received >= 1 && all.data.totals.bounced >= 1 && !('data' in all.data), all);
const ofOne = await resend.emails.metrics({ metrics: ['received', 'bounced', 'bounce_rate'], dimensions: ['email'], emailId: [bounced.data.id] });
check('emails.metrics of one email', ofOne.data && ofOne.data.data.length === 1 && ofOne.data.data[0].email_id === bounced.data.id
  && ofOne.data.data[0].bounced === 1 && ofOne.data.totals.bounce_rate === 100, ofOne);
const byDay = await resend.emails.metrics({ metrics: ['received'], dimensions: ['period'], timezone: 'Asia/Tokyo' });
check('emails.metrics by day', byDay.data && byDay.data.data.length >= 6 && byDay.data.data.every((r) => /^\d{4}-\d{2}-\d{2}$/.test(r.period))
  && byDay.data.data.reduce((n, r) => n + r.received, 0) === byDay.data.totals.received, byDay);
// A date range includes both its dates: today to today counts today's emails.
const today = new Date().toISOString().slice(0, 10);
const ofToday = await resend.emails.metrics({ metrics: ['received'], startDate: today, endDate: today });
check('emails.metrics from today to today', ofToday.data && ofToday.data.totals.received >= 1
  && ofToday.data.start_date === `${today}T00:00:00.000Z`, ofToday);
const badMetric = await resend.emails.metrics({ metrics: ['opens'] });
check('emails.metrics refuses an unknown metric', badMetric.error && badMetric.error.name === 'validation_error' && badMetric.error.statusCode === 422, badMetric);

// Usage (`usage.get`): the bounced email above counted today and this month; no quota, so the
// daily limit is null and the monthly one the largest exact JSON integer.
const usage = await resend.usage.get();
check('usage.get', usage.data && usage.data.object === 'usage' && usage.data.emails.daily.sent >= 1
  && usage.data.emails.monthly.sent >= usage.data.emails.daily.sent && usage.data.emails.daily.limit === null
  && usage.data.emails.monthly.limit === Number.MAX_SAFE_INTEGER && usage.data.contacts.limit === 0
  && typeof usage.data.domains.used === 'number' && usage.data.rate_limit.duration === '1000ms', usage);
