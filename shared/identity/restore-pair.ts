import { createPrivateKey, X509Certificate } from 'node:crypto'
import { dirname } from 'node:path'
import { linkedAside } from '../atomic-file.js'
import type { Config } from '../config/types.js'
import { readFile, rename, syncDir } from '../fs-async.js'

/** Whether `keyPem` is the private key of `cert`; false for what does not parse. */
function pairs(cert: X509Certificate, keyPem: string): boolean {
  try {
    return cert.checkPrivateKey(createPrivateKey(keyPem))
  } catch {
    return false
  }
}

/**
 * A write of the identity renames the keys first, then the certificates, each old file linked
 * aside first (`writeFilesAtomic`). A process ended between the two (SIGKILL, a node lost) left a
 * new key beside the old certificate, and the old key as `<key>.<hex>.old`: swept as a leftover,
 * the start had no identity, and with the provider down it failed. Each key file that is not the
 * certificate's is given back the old key linked aside beside it that is. Called at the start,
 * before the sweep, with no write under way (the identity lock held). Resolves to the key files
 * restored.
 */
export async function restoreInterruptedPair(config: Config): Promise<string[]> {
  // The usual start, no write cut: a listing of each key's folder, and nothing read or parsed
  // (the identity on disk is read and checked next, by the start itself).
  const aside = await Promise.all(config.keyFiles.map(linkedAside))
  if (aside.every((olds) => olds.length === 0)) return []
  const certPem = await readFile(config.certFile, 'utf8').catch(() => '')
  let cert: X509Certificate
  try {
    cert = new X509Certificate(certPem)
  } catch {
    return [] // no certificate to pair a key with: nothing to restore
  }
  const restored: string[] = []
  for (const [i, keyFile] of config.keyFiles.entries()) {
    if (aside[i]!.length === 0 || pairs(cert, await readFile(keyFile, 'utf8').catch(() => ''))) continue
    for (const old of aside[i]!) {
      if (!pairs(cert, await readFile(old, 'utf8').catch(() => ''))) continue
      await rename(old, keyFile)
      await syncDir(dirname(keyFile))
      restored.push(keyFile)
      break
    }
  }
  return restored
}
