// The official Node SDK's `emails.receiving.*` against a mailroom server that received two
// messages by SMTP for the verified domain sdk-node.test (one with an inline image and a PDF):
// list (cursor pages), get (data_uri and cid), attachments list and get, raw download, and
// forward() both ways — which downloads the raw message without a key and sends it on.
// Usage: RESEND_BASE_URL=… KEY=… node node_receiving.mjs
import { Resend } from 'resend';
import { check } from './check.mjs';

const resend = new Resend(process.env.KEY, { baseUrl: process.env.RESEND_BASE_URL });

const all = await resend.emails.receiving.list();
check('receiving.list', all.data && all.data.object === 'list' && all.data.data.length === 2, all);
const [newest, oldest] = all.data.data;
check('newest first, with the list shape', newest.subject === 'Plain note' && oldest.subject === 'Invoice' && !('html' in newest), all.data);
check('received_for is the envelope recipient', JSON.stringify(oldest.received_for) === JSON.stringify(['billing@sdk-node.test']), oldest);
const page = await resend.emails.receiving.list({ limit: 1 });
check('a page of one has more', page.data.data.length === 1 && page.data.has_more === true, page);
const next = await resend.emails.receiving.list({ limit: 1, after: page.data.data[0].id });
check('after the cursor comes the older one', next.data.data[0].id === oldest.id && next.data.has_more === false, next);

const got = await resend.emails.receiving.get(oldest.id);
const e = got.data;
check('receiving.get', e && e.object === 'email' && e.from === 'ann@sender.test' && e.subject === 'Invoice', got);
check('inline images as data URIs by default', e.html_format === 'data_uri' && e.html.includes('src="data:image/png;base64,'), e.html);
check('headers and the raw link', e.headers.subject === 'Invoice' && e.raw.download_url.startsWith('http') && e.raw.expires_at, e);
const cid = await resend.emails.receiving.get(oldest.id, { html_format: 'cid' });
check('cid keeps the references', cid.data.html_format === 'cid' && cid.data.html.includes('cid:logo@sdk'), cid.data.html);
const plain = await resend.emails.receiving.get(newest.id);
check('a plain-text message has its text and no html', plain.data.html === null && plain.data.text.includes('This is a test mailing'), plain.data);
const bad = await resend.emails.receiving.get(oldest.id, { html_format: 'svg' });
check('an unknown html_format is refused', bad.error && bad.error.statusCode === 422, bad);
const missing = await resend.emails.receiving.get('00000000-0000-4000-8000-000000000000');
check('an unknown id is not found', missing.error && missing.error.statusCode === 404, missing);

const atts = await resend.emails.receiving.attachments.list({ emailId: oldest.id });
check('attachments.list', atts.data && atts.data.data.length === 2, atts);
const pdf = atts.data.data.find((a) => a.filename === 'invoice.pdf');
check('an attachment has a download URL for an hour', pdf && pdf.download_url && Date.parse(pdf.expires_at) - Date.now() > 3500e3, pdf);
const one = await resend.emails.receiving.attachments.get({ emailId: oldest.id, id: pdf.id });
check('attachments.get', one.data && one.data.object === 'attachment' && one.data.size === pdf.size, one);
const bytes = Buffer.from(await (await fetch(pdf.download_url)).arrayBuffer());
check('the attachment downloads without a key', bytes.length === pdf.size && bytes.toString().startsWith('%PDF-1.4'), bytes.length);

const fwd = await resend.emails.receiving.forward({ emailId: oldest.id, from: 'Acme <fwd@acme.test>', to: 'delivered@resend.dev' });
check('forward (passthrough)', fwd.data && fwd.data.id, fwd);
const sent = await resend.emails.get(fwd.data.id);
check('the forward carries the original subject', sent.data.subject === 'Invoice', sent.data);
const wrapped = await resend.emails.receiving.forward({ emailId: oldest.id, from: 'fwd@acme.test', to: ['delivered@resend.dev'], passthrough: false, text: 'See below.' });
check('forward (wrapped as message/rfc822)', wrapped.data && wrapped.data.id, wrapped);
const w = await resend.emails.get(wrapped.data.id);
check('the wrapped forward says Fwd:', w.data.subject === 'Fwd: Invoice', w.data);
