/**
 * Throwaway certificates for the RLINK's TLS, made with the machine's openssl (P-256 keys):
 * a CA, a certificate per host signed by it, one signed by another CA, one already expired.
 */
import * as fs from 'fs'
import * as path from 'path'
import { execOk } from './util'

export interface HostCert { cert: string, key: string }
export interface Certs {
  dir: string
  ca: string
  otherCa: string
  primary: HostCert
  secondary: HostCert
  /** Signed by `otherCa`. */
  stranger: HostCert
  /** Signed by `ca`, expired yesterday. */
  expired: HostCert
}

async function openssl (dir: string, args: string[]): Promise<void> {
  await execOk('openssl', args, { cwd: dir, timeoutMs: 30_000 })
}

async function makeCa (dir: string, name: string): Promise<void> {
  await openssl(dir, ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.pem`, '-subj', `/CN=replicafs test ${name}`, '-days', '30'])
}

async function makeHost (dir: string, name: string, ca: string, days: number): Promise<HostCert> {
  await openssl(dir, ['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`])
  await openssl(dir, ['x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.pem`, '-CAkey', `${ca}.key`, '-CAcreateserial', '-days', String(days), '-out', `${name}.pem`])
  fs.chmodSync(path.join(dir, `${name}.key`), 0o600)
  return { cert: path.join(dir, `${name}.pem`), key: path.join(dir, `${name}.key`) }
}

export async function makeCerts (dir: string): Promise<Certs> {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 })
  await makeCa(dir, 'ca')
  await makeCa(dir, 'other-ca')
  return {
    dir,
    ca: path.join(dir, 'ca.pem'),
    otherCa: path.join(dir, 'other-ca.pem'),
    primary: await makeHost(dir, 'primary', 'ca', 30),
    secondary: await makeHost(dir, 'secondary', 'ca', 30),
    stranger: await makeHost(dir, 'stranger', 'other-ca', 30),
    expired: await makeHost(dir, 'expired', 'ca', -1)
  }
}

/** The flags of a daemon presenting `host` and trusting `ca`. */
export function tlsArgs (host: HostCert, ca: string): string[] {
  return ['--tls-cert', host.cert, '--tls-key', host.key, '--tls-ca', ca]
}

/** SHA-256 fingerprint of a PEM certificate, as openssl prints it (AA:BB:...). */
export async function fingerprintOf (cert: string): Promise<string> {
  const r = await execOk('openssl', ['x509', '-noout', '-fingerprint', '-sha256', '-in', cert], { timeoutMs: 30_000 })
  return r.stdout.trim().replace(/^.*=/, '')
}
