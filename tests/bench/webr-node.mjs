// webR 0.6.0 in Node.js, measured the same way hako is: start to first
// result, a `1+1` round trip, the compute set, RSS. Prints one JSON line.
import { WebR } from 'webr';
import { readFileSync } from 'node:fs';

const jit = process.argv.includes('--jit');
const rounds = Number(process.env.HAKO_BENCH_ROUNDS || 200);
const t0 = performance.now();
const webR = new WebR({ interactive: false, REnv: { R_ENABLE_JIT: jit ? '3' : '0', R_HOME: '/usr/lib/R', HOME: '/home/web_user' } });
await webR.init();
const one = await webR.evalRNumber('1+1');
const start = (performance.now() - t0) / 1000;
if (one !== 2) throw new Error('1+1 != 2');

const rt = [];
for (let i = 0; i < rounds; i++) {
  const t = performance.now();
  await webR.evalRNumber('1+1');
  rt.push(performance.now() - t);
}
rt.sort((a, b) => a - b);

const computeSrc = readFileSync(new URL('./compute.R', import.meta.url), 'utf8');
await webR.evalRVoid(computeSrc);
const names = await webR.evalRString('paste(names(hako_bench_compute), collapse = ",")');
const compute = {};
for (const name of names.split(',')) {
  let best = Infinity;
  for (let i = 0; i < 3; i++) {
    const t = performance.now();
    await webR.evalRVoid(`invisible(eval(hako_bench_compute[["${name}"]]))`);
    best = Math.min(best, performance.now() - t);
  }
  compute[name] = best / 1000;
}
const rss = process.memoryUsage().rss;
console.log(JSON.stringify({ start_s: start, rt_p50_ms: rt[Math.floor(rt.length / 2)], rt_p99_ms: rt[Math.floor(rt.length * 0.99)], compute_s: compute, rss_mb: rss / 1048576 }));
webR.close();
process.exit(0);
