// The official Node SDK's `domains.*` against a mailroom server whose nameserver is a dnsmasq
// the test starts between the two phases (the records exist only once the domain is made).
// Usage: RESEND_BASE_URL=… KEY=… RECORDS=file node node_domains.mjs create|verify
import { Resend } from 'resend';
import { check, sleep } from './check.mjs';
import fs from 'node:fs';

const resend = new Resend(process.env.KEY, { baseUrl: process.env.RESEND_BASE_URL });
const phase = process.argv[2];
const name = 'sdk-node.test';

if (phase === 'create') {
  const missing = await resend.domains.create({});
  check('domains.create without a name', missing.error && missing.error.name === 'missing_required_field', missing);
  const region = await resend.domains.create({ name: 'other-node.test', region: 'mars-1' });
  check('domains.create with a bad region', region.error && region.error.name === 'invalid_region' && region.error.statusCode === 422, region);
  const badName = await resend.domains.create({ name: 'not a domain' });
  check('domains.create with a bad name', badName.error && badName.error.statusCode === 422 && badName.error.message.includes('name'), badName);

  const created = await resend.domains.create({ name, region: 'eu-west-1', trackingSubdomain: 'links', openTracking: true, capabilities: { receiving: 'enabled' } });
  const d = created.data;
  check('domains.create', d && d.name === name && d.status === 'not_started' && d.region === 'eu-west-1' && d.id, created);
  check('domains.create answers the capabilities', d.capabilities.sending === 'enabled' && d.capabilities.receiving === 'enabled', d);
  const kinds = d.records.map((r) => `${r.record}/${r.type}/${r.name}`);
  check('domains.create lists the records to publish', JSON.stringify(kinds) === JSON.stringify(['SPF/MX/send', 'SPF/TXT/send', 'DKIM/TXT/mailroom._domainkey', 'Receiving/MX/@', 'Tracking/CNAME/links']), kinds);
  check('records carry ttl, status and priority', d.records.every((r) => r.ttl === 'Auto' && r.status === 'not_started') && d.records[0].priority === 10, d.records);
  check('the DKIM record holds an RSA key', d.records[2].value.startsWith('v=DKIM1; k=rsa; p=MII'), d.records[2]);
  const twice = await resend.domains.create({ name });
  check('a domain is added once', twice.error && twice.error.name === 'validation_error', twice);

  const got = await resend.domains.get(d.id);
  check('domains.get', got.data && got.data.object === 'domain' && got.data.records.length === 5 && got.data.open_tracking === true, got);
  const list = await resend.domains.list();
  check('domains.list', list.data && list.data.object === 'list' && list.data.data.some((x) => x.id === d.id && !x.records), list);
  fs.writeFileSync(process.env.RECORDS, JSON.stringify({ domain: name, records: d.records }));
} else {
  const list = await resend.domains.list();
  const d = list.data.data.find((x) => x.name === name);
  const v = await resend.domains.verify(d.id);
  check('domains.verify', v.data && v.data.object === 'domain' && v.data.id === d.id, v);
  let got;
  for (let i = 0; i < 200; i++) {
    got = await resend.domains.get(d.id);
    if (got.data.status === 'verified') break;
    await sleep(100);
  }
  check('the domain verifies against the published records', got.data.status === 'verified' && got.data.records.every((r) => r.status === 'verified'), got);

  const updated = await resend.domains.update({ id: d.id, clickTracking: true, tls: 'enforced' });
  check('domains.update', updated.data && updated.data.object === 'domain' && updated.data.id === d.id, updated);
  const after = await resend.domains.get(d.id);
  check('domains.update took effect', after.data.click_tracking === true && after.data.status === 'verified', after);
  const badTls = await resend.domains.update({ id: d.id, tls: 'sometimes' });
  check('domains.update refuses a bad tls', badTls.error && badTls.error.statusCode === 422, badTls);

  const second = await resend.domains.create({ name: 'second-node.test' });
  const page = await resend.domains.list({ limit: 1 });
  check('domains.list pages newest first', page.data.data.length === 1 && page.data.data[0].id === second.data.id && page.data.has_more, page);
  const walked = [page.data.data[0].id];
  for (let p = page; p.data.has_more; ) {
    p = await resend.domains.list({ limit: 1, after: walked[walked.length - 1] });
    walked.push(...p.data.data.map((x) => x.id));
  }
  const all = (await resend.domains.list({ limit: 100 })).data.data.map((x) => x.id);
  check('domains.list after a cursor walks every domain once, in order', JSON.stringify(walked) === JSON.stringify(all) && all.includes(d.id), { walked, all });
  const back = await resend.domains.list({ limit: 1, before: all[1] });
  check('domains.list before a cursor', back.data.data[0].id === all[0] && !back.data.has_more, back);

  const removed = await resend.domains.remove(second.data.id);
  check('domains.remove', removed.data && removed.data.deleted === true && removed.data.id === second.data.id, removed);
  const gone = await resend.domains.get(second.data.id);
  check('a removed domain is gone', gone.error && gone.error.name === 'not_found' && gone.error.statusCode === 404, gone);
}
