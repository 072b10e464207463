// The script floor: the fake agent driven directly over stream-json by a Node script, no
// hub in between, as issue 10 measured its floor ("a script driving the same fake agent
// directly"). The same lines and measures as the native floor (floor.rs): a warm turn, a
// cold start plus first turn, and `pairs` agents driven at once, each turn after the last.
//
// node floor.js FAKE_AGENT ROOT WARM COLDS PAIRS PER_PAIR
// Prints one JSON line: {"warm": [µs...], "cold": [µs...], "parallel": [µs...],
// "parallelElapsed": µs}.
'use strict';
const { spawn } = require('node:child_process');
const { randomUUID } = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');

const [agentPath, root, warmArg, coldsArg, pairsArg, perPairArg] = process.argv.slice(2);
const [warm, colds, pairs, perPair] = [warmArg, coldsArg, pairsArg, perPairArg].map(Number);

const now = () => Number(process.hrtime.bigint()) / 1000; // µs

/** One fake agent: lines in, the line that ends what was asked awaited. */
class Agent {
  constructor(team) {
    const cwd = fs.realpathSync(path.join(root, 'teams', `team${team}`));
    const state = path.join(root, 'floor-state', `team${team}`);
    fs.mkdirSync(state, { recursive: true });
    this.child = spawn(agentPath, [
      '--print', '--verbose', '--input-format=stream-json', '--output-format=stream-json',
      '--permission-prompt-tool=stdio', `--session-id=${randomUUID()}`,
    ], { cwd, env: { ...process.env, FAKE_AGENT_STATE_DIR: state }, stdio: ['pipe', 'pipe', 'ignore'] });
    this.buffer = '';
    this.waiting = null;
    this.child.stdout.setEncoding('utf8');
    this.child.stdout.on('data', (chunk) => this.onData(chunk));
    this.child.on('exit', () => {
      if (this.waiting) this.waiting.reject(new Error('the fake agent ended'));
    });
  }

  onData(chunk) {
    this.buffer += chunk;
    let newline;
    while ((newline = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, newline);
      this.buffer = this.buffer.slice(newline + 1);
      if (this.waiting && line.includes(this.waiting.needle)) {
        const { resolve } = this.waiting;
        this.waiting = null;
        resolve();
      }
    }
  }

  until(line, needle) {
    return new Promise((resolve, reject) => {
      this.waiting = { needle, resolve, reject };
      this.child.stdin.write(line + '\n');
    });
  }

  start() {
    return this.until(
      '{"type":"control_request","request_id":"init","request":{"subtype":"initialize"}}',
      '"control_response"');
  }

  async turn(text) {
    const started = now();
    const line = JSON.stringify({
      type: 'user', message: { role: 'user', content: text }, parent_tool_use_id: null,
      session_id: '',
    });
    await this.until(line, '"type":"result"');
    return now() - started;
  }

  stop() {
    this.child.stdin.end();
    this.child.kill('SIGKILL');
  }
}

async function main() {
  const agent = new Agent(0);
  await agent.start();
  for (let i = 0; i < Math.floor(warm / 10); i++) await agent.turn('ping');
  const warmSamples = [];
  for (let i = 0; i < warm; i++) warmSamples.push(await agent.turn('ping'));
  agent.stop();
  const cold = [];
  for (let i = 0; i < colds; i++) {
    const started = now();
    const fresh = new Agent(0);
    await fresh.start();
    await fresh.turn('ping');
    cold.push(now() - started);
    fresh.stop();
  }
  const agents = [];
  for (let i = 0; i < pairs; i++) {
    const one = new Agent(i % 8);
    await one.start();
    for (let j = 0; j < 3; j++) await one.turn('ping');
    agents.push(one);
  }
  const started = now();
  const runs = await Promise.all(agents.map(async (one) => {
    const samples = [];
    for (let i = 0; i < perPair; i++) samples.push(await one.turn('ping'));
    return samples;
  }));
  const parallelElapsed = now() - started;
  agents.forEach((one) => one.stop());
  process.stdout.write(JSON.stringify({
    warm: warmSamples, cold, parallel: runs.flat(), parallelElapsed,
  }) + '\n');
}

main().catch((error) => {
  process.stderr.write(`${error.stack}\n`);
  process.exit(1);
});
