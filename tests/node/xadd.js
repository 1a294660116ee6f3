'use strict'
// Reports game events to varcade's Redis-protocol listener exactly as the
// original RPS game server does (game_rps/server/game_server/event_stream.js
// and game_handler.js): node-redis 3, `redis.createClient(url)`, and
// `client.xadd(stream, '*', 'product_id', …, 'game_id', …, 'type', …,
// ...eventData, callback)`.
//
// Usage: node xadd.js <redis url> <game id> <player 1 id (a number)> <player 2 id>
// Prints {"ids": [...]} (the XADD replies, in the order sent) on stdout.
// tests/resp.rs mirrors this sequence; keep the two in step.

const redis = require('redis')

const [url, gameId, p1Arg, p2] = process.argv.slice(2)
if (!url || !gameId || !p1Arg || !p2) {
  console.error('usage: node xadd.js <redis url> <game id> <p1 id> <p2 id>')
  process.exit(64)
}
// The original passes user ids as it got them from the game portal's
// token, sometimes numbers; node-redis sends a number as its decimal text.
const p1 = Number(p1Arg)

const GAME_EVENT_STREAM_ID = 'game_event_stream'
const PRODUCT_ID = 'exrps'

const timer = setTimeout(() => {
  console.error('timed out after 20 s')
  process.exit(2)
}, 20000)

const client = redis.createClient(url)
client.on('error', (err) => {
  console.error('redis client error:', err && err.message)
  process.exit(1)
})

function sendStreamEvent (type, eventData) {
  return new Promise((resolve, reject) => {
    const eventArgs = [
      GAME_EVENT_STREAM_ID, '*',
      'product_id', PRODUCT_ID,
      'game_id', gameId,
      'type', type
    ]
    if (eventData) {
      eventArgs.push(...Object.entries(eventData).flat())
    }
    eventArgs.push((err, res) => {
      if (err) {
        reject(new Error(`XADD ${type} ${JSON.stringify(eventData)}: ${err.message}`))
      } else {
        resolve(res)
      }
    })
    client.xadd(...eventArgs)
  })
}

// new GameplayEvent(gameId, userId, eventName, eventData)
const gameplay = (userId, eventName, eventData) =>
  sendStreamEvent('gameplay', { event_name: eventName, event_data: eventData, user_id: userId })

async function main () {
  const ids = []
  // connectPlayer: the creator connects.
  ids.push(await sendStreamEvent('state_change', { new_state: 'creator_joined' }))
  // handleSelectFighter: msg.characterId is a number.
  ids.push(await gameplay(p1, 'select_fighter', 3))
  ids.push(await gameplay(p2, 'select_fighter', 1))
  // handleStartBattle
  ids.push(await gameplay(p1, 'set_ready', ''))
  ids.push(await gameplay(p2, 'set_ready', ''))
  // WEAPONS_SELECTED: two xadds back to back, without waiting for a reply.
  const weapons = [gameplay(p1, 'select_weapon', '' + 0), gameplay(p2, 'select_weapon', '' + 2)]
  ids.push(...(await Promise.all(weapons)))
  // ROUND_FINISHED: new GameProgressEvent(...)
  ids.push(await sendStreamEvent('gameplay', {
    round_winner_id: p1,
    round_loser_id: p2,
    event_name: 'progression',
    progress_event: 'round_finished',
    p1_id: p1,
    p2_id: p2
  }))
  // GAME_COMPLETE: new GameOverEvent(gameId, winnerId, loserId)
  ids.push(await sendStreamEvent('game_over', { winner_id: p1, loser_id: p2 }))
  await new Promise((resolve, reject) => client.quit((err) => (err ? reject(err) : resolve())))
  return ids
}

main().then(
  (ids) => {
    clearTimeout(timer)
    process.stdout.write(JSON.stringify({ ids }) + '\n')
    process.exit(0)
  },
  (err) => {
    console.error(err && err.message)
    process.exit(1)
  }
)
