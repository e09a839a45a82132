/** Throwaway TLS material for the benches: a CA and a certificate per end (openssl, P-256). */
import * as fs from 'fs'
import * as path from 'path'
import { runOk } from './proc'

/** The `--tls-*` flags of each end, with its certificate and key made in `dir`. */
export async function makeCerts(dir: string): Promise<{ primary: string[]; secondary: string[] }> {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 })
  const o = async (args: string[]): Promise<void> => { await runOk(['openssl', ...args], { timeoutMs: 60_000, cwd: dir }) }
  await o(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-subj', '/CN=bench-ca', '-days', '2'])
  const host = async (n: string): Promise<string[]> => {
    await o(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${n}.key`, '-out', `${n}.csr`, '-subj', `/CN=${n}`])
    await o(['x509', '-req', '-in', `${n}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2', '-out', `${n}.pem`])
    fs.chmodSync(path.join(dir, `${n}.key`), 0o600)
    return ['--tls-cert', path.join(dir, `${n}.pem`), '--tls-key', path.join(dir, `${n}.key`), '--tls-ca', path.join(dir, 'ca.pem')]
  }
  return { primary: await host('primary'), secondary: await host('secondary') }
}

/** User + system CPU seconds of a process so far (/proc/PID/stat fields 14 and 15). */
export function cpuSecondsOf(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  // f[0] is field 3.
  return (Number(f[11]) + Number(f[12])) / 100
}
