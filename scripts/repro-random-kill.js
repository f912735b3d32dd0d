// Stress outside jest for issue 6: the CLI SIGKILLed at random instants around its session,
// then `lockmem recover`; stops at the first target that dies (a bug fixed since: our own
// pending SIGSTOP taken mid-injection, then signals taken with our registers in place). Usage (after npm run build:ts, as root): node scripts/repro-random-kill.js pipe 500
// Prints 'DIED at iter ...' with the target's thread states, pending signals and the journal
// at the kill, then check dmesg for the segfault line.
const { startTarget, stopAllTargets } = require(require('path').join(__dirname, '..', 'dist', 'tests', 'support', 'target.js'));
const { spawn, execFileSync } = require('child_process');
const fs = require('fs');
const dir = process.env.LOCKMEM_STATE_DIR || '/tmp/lockmem-random-kill'; process.env.LOCKMEM_STATE_DIR = dir;
const jdir = dir + '/journal';
const states = (pid) => { try { return fs.readdirSync(`/proc/${pid}/task`).map(t => { const s = fs.readFileSync(`/proc/${pid}/task/${t}/stat`, 'utf8'); return s[s.lastIndexOf(')') + 2]; }).join(''); } catch { return 'gone'; } };
const sig = (pid) => { try { return fs.readFileSync(`/proc/${pid}/status`, 'utf8').match(/(SigPnd|ShdPnd|TracerPid).*/g).join(' '); } catch { return ''; } };
(async () => {
  const t = await startTarget({ mode: process.argv[2] || 'pipe', anonMb: 256 });
  for (let i = 0; i < Number(process.argv[3] || 100); i++) {
    const op = i % 2 ? 'unlock' : 'lock';
    const cli = spawn(process.execPath, [require('path').join(__dirname, '..', 'bin', 'lockmem'), op, '--pid', String(t.pid), '--kind', 'anon'], { env: process.env, stdio: 'ignore' });
    const exited = new Promise(r => cli.on('exit', r));
    const delay = Math.random() * 30;
    let killedInfo = '';
    const start = Date.now();
    while (Date.now() - start < 2000) { if (fs.existsSync(jdir) && fs.readdirSync(jdir).length) break; await new Promise(r => setImmediate(r)); }
    await new Promise(r => setTimeout(r, delay));
    try { process.kill(cli.pid, 'SIGKILL'); } catch {}
    killedInfo = `${states(t.pid)} ${sig(t.pid)} journal=${fs.existsSync(jdir) ? fs.readdirSync(jdir).map(f => f.endsWith('.regs') ? fs.readFileSync(jdir + '/' + f, 'utf8').replace(/regs=[0-9a-f-]+/, 'regs=..').replace(/\n/g, ' ') : f).join('|') : ''}`;
    await exited;
    await new Promise(r => setTimeout(r, 30));
    const after = states(t.pid);
    if (after === 'gone' || !t.isAlive()) { console.log('DIED at iter', i, op, 'delay', delay.toFixed(1), 'at kill:', killedInfo); break; }
    try { execFileSync(process.execPath, [require('path').join(__dirname, '..', 'bin', 'lockmem'), 'recover', '--pid', String(t.pid)], { env: process.env, stdio: 'ignore' }); } catch (e) { console.log('recover failed', i); }
    if (!t.isAlive()) { console.log('DIED after recover at', i, killedInfo); break; }
  }
  console.log('done, alive', t.isAlive());
  await stopAllTargets();
})();
