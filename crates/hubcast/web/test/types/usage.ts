// Compiled (not run) by types.test.mjs: the example against the
// declarations, so hubcast.d.ts stays true to the API.
import { Hubcast, HubcastError, type Envelope, type Member } from '../../client/hubcast.js';

async function demo(token: string): Promise<void> {
  const hc = new Hubcast('ws://host/ws', { token, name: 'ada', maxQueue: 50 });
  hc.on('state', (state, info) => console.log(state, info.code, info.reason));
  const room = await hc.join('lobby');
  room.on('message', (envelope: Envelope) => console.log(envelope.msgId, envelope.offset, envelope.data));
  room.on('presence', (event) => {
    if (event.action === 'sync') console.log('members changed', event.changes);
    else console.log(event.action, event.user, event.status);
  });
  room.on('members', (members: Member[]) => console.log(members.length));
  room.on('unrecovered', (info) => console.log(info.epoch, info.offset));
  const ack = await room.publish('chat.message', { text: 'hi' });
  const dup: boolean = ack.duplicate;
  await hc.send('bob', 'dm', { text: 'psst' });
  await hc.setStatus('away');
  const page = await room.history({ limit: 10 });
  console.log(dup, page.messages[0]?.eventType, page.complete);
  hc.setToken(() => Promise.resolve(token));
  try {
    await hc.publish('lobby', 'e', 1, { msgId: 'x', timeout: 1000, echo: true });
  } catch (e) {
    if (e instanceof HubcastError) console.log(e.code);
  }
  await room.leave();
  hc.close();
}
void demo;
