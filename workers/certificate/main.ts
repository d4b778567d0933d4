import { sweepLeftoversAtStart } from '../../shared/atomic-file.js'
import { pauseOnWall } from '../../shared/clock.js'
import { defineService } from '../../shared/define-service.js'
import { codedError } from '../../shared/errors.js'
import { createIdentityPublisher } from '../../shared/identity/announce.js'
import { backoffDelay, capToEnd, pause, retryAtBoot } from '../../shared/identity/backoff.js'
import {
  createBackupWriter,
  createSecretBackup,
  readBackupIdentity,
  storeRestored,
} from '../../shared/identity/backup.js'
import {
  commonNameOf,
  completeOutputs,
  type Exclusive,
  endsAt,
  freshForMs,
  type Identity,
  readIdentity,
  readIdentityOrWhy,
  readOwnIdentity,
  refreshDueAt,
  refreshPlan,
  roleCertPath,
  sayIfAnotherPrincipal,
} from '../../shared/identity/identity.js'
import { certificateOutputs } from '../../shared/identity/naming.js'
import { providerKind } from '../../shared/identity/provider.js'
import { restoreInterruptedPair } from '../../shared/identity/restore-pair.js'
import { createCertRuntime } from '../../shared/identity/runtime.js'
import { parseTargets } from '../../shared/identity/targets.js'
import { watchFiles } from '../../shared/identity/watch.js'
import { bootDeadline, untilDeadline } from '../../shared/start-deadline.js'
import { createWatchedSlot } from '../../shared/watched-slot.js'
import { registerBuildInfo } from './build-info.js'
import { removeDroppedRoleFiles } from './dropped-roles.js'
import { registerX509Metrics } from './x509-metrics.js'

const INITIAL_BACKOFF_MS = 5_000
/** How long files that are no valid pair are given to become one before it is said (a writer half-way). */
const INVALID_PAIR_SETTLE_MS = 2_000
/** The longest wait between tries at boot, or when no periodic refresh sets a scale. */
const MAX_IDLE_BACKOFF_MS = 60_000
const DELETE_TIMEOUT_MS = 5_000
/** The least time worth a try of the boot fetch. */
const MIN_TRY_MS = 1_000
/** What a refresh is given before the first certificate it renews expires: a try or two of a ZTS call (10 s each). */
const EXPIRY_MARGIN_MS = 30_000

/**
 * The certificate service: obtains the service identity and role certificates at start, then
 * every REFRESH_INTERVAL; a failed refresh is retried with backoff and never replaces good files.
 * Each new identity is announced in-process (the token service's mutual TLS to ZTS).
 */
defineService({
  async start({ config, previous, log, go, registry, collection, signal, onStop, expose, failpoint, board }) {
    // A reload starts a successor while this thread drains, a refresh of its own perhaps under
    // way: each set of identity files is written, and read at the start, holding the board's
    // lock (freed by the supervisor if its holder's thread ends), never the two at once.
    const lock = board.identityLock()
    const exclusive: Exclusive = async (write) => {
      const release = await lock.acquire()
      try {
        return await write()
      } finally {
        release()
      }
    }
    // A process ended between the renames of a key and its certificate left the old key linked
    // aside, the pair with the certificate in place: put back, not swept (the provider issues
    // nothing for the files provider: the files are a third party's).
    if (providerKind(config) !== 'files') {
      const restored = await exclusive(() => restoreInterruptedPair(config))
      if (restored.length > 0)
        log.warn(
          { event: 'certificate.pair.restored', keyFiles: restored, certFile: config.certFile },
          'a write was cut between the key and the certificate: the key that pairs with the certificate is back',
        )
    }
    // A thread ended between staging and renaming (watchdog, out of heap, SIGKILL) left its staged
    // files, a private key among them, beside the outputs: removed before anything is written.
    // Whatever their age: with the lock held no write of them is under way (a predecessor's is
    // done or was cut with its thread).
    await exclusive(() =>
      sweepLeftoversAtStart(certificateOutputs(config), log, 'certificate.leftovers.removed', 0),
    )
    // The boot fetch ends before the start's deadline: a provider that hangs or keeps failing is
    // answered as such (the identity on disk kept, or the start failed naming its error).
    const bootEnds = bootDeadline(config.services.certificate.startTimeout)
    // BACKUP: a kubernetes.io/tls secret written after each issue, read when the provider fails at boot.
    // The files provider issues nothing: there is nothing to back up or to stand in for.
    const backup =
      config.backup && providerKind(config) !== 'files' ? await createSecretBackup(config) : undefined
    if (config.backup && !backup) {
      log.warn({ event: 'certificate.backup.unused' }, 'BACKUP has no effect with the files provider')
    }
    if (backup) onStop(() => backup.close())
    const backupWriter = backup && createBackupWriter(backup, log, signal)
    if (backupWriter) onStop(({ deadline }) => backupWriter.settled(deadline, 'the shutdown deadline'))
    /** The last instance identity this worker had issued (the role certificates may still have failed). */
    let issued: Identity | undefined
    const rt = await createCertRuntime(config, log, {
      onIssued: (stored) => {
        issued = stored
        backupWriter?.write(stored)
      },
      beforeWrite: () => failpoint('certificate.before-write'),
      exclusive,
    })
    // A refresh is given what the boot fetch is: the service's start deadline.
    const slot = createWatchedSlot({
      stuckAfterMs: config.services.certificate.startTimeout,
      log,
      event: 'certificate.refresh',
      what: 'a refresh',
      gauge: {
        registry,
        name: 'certificate_refresh_stuck_seconds',
        help: 'How long the refresh in flight has run, once it has outlasted the start deadline (0: none is stuck)',
      },
    })
    onStop(() => rt.close())
    // Run before the client closes (cleanups run in reverse): a refresh the shutdown aborted may
    // be renaming its files still; the thread, ended at the acknowledgement, cut it between the
    // key's rename and the certificate's (a key beside another key's certificate).
    onStop(async ({ deadline }) => {
      if (!(await slot.idle(deadline)))
        log.error(
          { event: 'certificate.refresh.unfinished' },
          'a refresh was still under way at the shutdown deadline',
        )
    })
    const deleteInstance = rt.provider.deleteInstance
    if (config.deleteInstanceId && deleteInstance) {
      // Runs before rt.close() (cleanups run in reverse): the client is still open. As SIA, when
      // the sidecar stops; not when a reload or a recycle replaces this thread (the record is the
      // successor's identity too: its next refresh found none and registered anew).
      onStop(async ({ replaced }) => {
        if (replaced) return
        try {
          await deleteInstance(AbortSignal.timeout(DELETE_TIMEOUT_MS))
          log.info({ event: 'certificate.instance.deleted' }, 'deleted the instance record at ZTS')
        } catch (err) {
          log.error(
            { event: 'certificate.instance.delete.failed', err },
            'could not delete the instance record',
          )
        }
      })
    }
    const targets = parseTargets(config.targetDomainRoles)
    registerBuildInfo(registry)
    registerX509Metrics(
      registry,
      () => [...config.certFiles, config.caCertFile, ...targets.map((t) => roleCertPath(config, t))],
      collection,
    )

    // Someone else's (files), or ours: another principal's, or another provider's, is not kept.
    let identity: Identity | undefined = await exclusive(() =>
      rt.kind === 'files' ? readIdentity(config) : readOwnIdentity(config),
    )
    // The current identity, for whoever asks (the token service at its start); each new one is
    // also announced as it is adopted.
    expose({ identity: () => identity })
    const publisher = createIdentityPublisher()
    onStop(() => publisher.close())
    const adopt = (id: Identity) => {
      identity = id
      rt.provider.useIdentity?.(id)
      publisher.publish(id)
    }
    // A valid identity on disk authenticates the first call (ZTS refresh rather than register).
    if (identity) rt.provider.useIdentity?.(identity)

    /**
     * The key whose role certificates failed after it was issued: retried alone while that
     * identity is in use and not due, not with a new key each time (a role ZTS refuses, a
     * ROLECERT_DIR not writable, turned every back-off into a key rotation and an instance refresh).
     */
    let rolesOwed: string | undefined
    /** One refresh: the whole identity, or only the role certs of someone else's identity. */
    const refreshOnce = (signal: AbortSignal) => slot.run(refreshWork, signal)
    const refreshWork = async (s: AbortSignal) => {
      if (rt.kind !== 'files') {
        const owed =
          rolesOwed !== undefined &&
          identity?.keyPem === rolesOwed &&
          Date.now() < refreshDueAt(identity.certPem, config.refreshInterval || Number.POSITIVE_INFINITY)
        if (!owed) {
          const issuedNow = await rt.refresher.refreshInstance(s)
          adopt(issuedNow)
          rolesOwed = issuedNow.keyPem
        }
        await rt.refresher.refreshRoles(rolesOwed!, s)
        rolesOwed = undefined
        return
      }
      if (!identity)
        throw codedError('ERR_NO_IDENTITY', `no valid key/cert in ${config.keyFile}, ${config.certFile}`)
      await rt.refresher.refreshRoles(identity.keyPem, s)
    }

    // Retries back off to a quarter of the interval; with REFRESH_INTERVAL=0 (no periodic refresh)
    // to a minute, as at boot: a quarter of 0 had a provider that keeps failing asked every 1 ms.
    const maxBackoffMs =
      config.refreshInterval > 0 ? Math.max(1, Math.floor(config.refreshInterval / 4)) : MAX_IDLE_BACKOFF_MS
    /** `refreshOnce` up to `tries` times, within the boot (`bootEnds`). */
    const bootFetch = (tries: number) =>
      retryAtBoot(refreshOnce, signal, {
        ends: bootEnds,
        refreshInterval: config.refreshInterval,
        tries,
        // Once an instance identity was issued, what failed is its role certificates: retried in
        // the background as for an identity on disk.
        retryable: () => !issued,
        onRetry: (err, attempt, wait) =>
          log.warn(
            { event: 'certificate.boot.retry', err, attempt, retryInMs: wait },
            `the provider could not issue at start; retrying in ${wait}ms`,
          ),
      })

    if (rt.kind === 'files') {
      if (!identity)
        throw codedError('ERR_NO_IDENTITY', `no valid key/cert in ${config.keyFile}, ${config.certFile}`)
      adopt(identity)
      log.info({ event: 'certificate.files', certFile: config.certFile }, 'certificate provisioning by files')
      sayIfAnotherPrincipal(config, identity, log)
    }
    // A restart (of the worker or the pod) within REFRESH_INTERVAL of the last issue reuses what
    // is on disk: no new key and no round trip to the authority; the timer refreshes when due.
    // The CA file is part of what a start reuses: one deleted, or CA_CERT_FILE set to a new path,
    // is written only by an issue (the CA comes with it).
    const freshMs = rt.kind !== 'files' && identity?.caPem ? await freshForMs(identity, config) : 0
    let retrying = false
    if (identity && freshMs > 0) {
      adopt(identity)
      log.info(
        { event: 'certificate.reused', certFile: config.certFile, refreshInMs: freshMs },
        'the identity on disk is fresh: reusing it',
      )
      // Every other KEY_FILE/CERT_FILE path holds it too, or is written now, not at the next refresh.
      const reused = identity
      await exclusive(() => completeOutputs(config, reused)).then(
        (wrote) =>
          wrote &&
          log.info(
            { event: 'certificate.outputs.written', keyFiles: config.keyFiles, certFiles: config.certFiles },
            'an output path did not hold the identity on disk: written again',
          ),
        (err: unknown) =>
          log.warn(
            { event: 'certificate.outputs.failed', err: { message: (err as Error).message } },
            'writing the identity to every output path failed; the next refresh writes them',
          ),
      )
    } else {
      // As SIA: a random delay before the boot fetch (DELAY_JITTER_SECONDS), so a fleet of new
      // pods rolling out at once does not reach the identity provider at once.
      if (config.delayJitterSeconds > 0) {
        const jitterMs = Math.floor(Math.random() * config.delayJitterSeconds * 1000)
        log.info(
          { event: 'certificate.boot.delayed', ms: jitterMs },
          `delaying the boot fetch by ${jitterMs}ms`,
        )
        await pause(jitterMs, signal)
      }
      // What was on disk: a new instance identity is adopted before its role certificates are
      // asked for, so `identity` may have changed by the time a role certificate fails.
      const onDisk = identity
      // Nothing on disk and a backup that may stand in: it is read while the provider is asked,
      // so the provider has the whole boot either way (given half of it, a slow one failed a
      // first deployment's start with no secret to read; given one try, a blip did), and the
      // backup is in hand when it gives up (read after, a slow API server had 2 s).
      const issuedFirst = new AbortController()
      const standIn =
        backup?.canRead && !onDisk
          ? readBackupIdentity(
              config,
              backup,
              AbortSignal.any([untilDeadline(signal, bootEnds), issuedFirst.signal]),
            ).then(
              (found) => ({ found }),
              (readErr: unknown) => ({ readErr }),
            )
          : undefined
      try {
        // With an identity on disk, one try (the identity is kept if that fails, and the provider
        // retried in the background); without, tries on SIA's back-off schedule while the start
        // has time.
        await bootFetch(onDisk ? 1 : Number.POSITIVE_INFINITY)
        issuedFirst.abort() // the backup's read is not needed
      } catch (err) {
        if (backup && standIn && !issued && !signal.aborted) {
          // No certificate from the provider and none on disk: serve with the backup, if there is
          // one, and keep trying the provider with back-off.
          log.warn(
            { event: 'certificate.boot.failed', err, backup: backup.secret },
            'the provider could not issue at start; reading the backup secret',
          )
          try {
            const read = await standIn
            if ('readErr' in read) throw read.readErr
            const restored = read.found
            await exclusive(() => storeRestored(config, backup, restored.identity))
            adopt(restored.identity)
            retrying = true
            log.warn(
              {
                event: 'certificate.backup.restored',
                secret: backup.secret,
                certFile: config.certFile,
                notAfter: restored.notAfter,
              },
              `serving with the certificate from the secret ${backup.secret}; retrying the provider with back-off`,
            )
          } catch (readErr) {
            log.error(
              { event: 'certificate.backup.read.failed', secret: backup.secret, err: readErr },
              `no usable backup: ${(readErr as Error).message}`,
            )
            throw err
          }
        } else if (!onDisk && !issued) {
          throw err
        } else {
          // An identity on disk, or one this fetch issued and wrote before a role certificate
          // failed (a fresh pod's start failed: a restart, a new key, and the next boot served).
          log.warn(
            { event: 'certificate.refresh.failed', err, keeping: config.certFile },
            'could not refresh at start; keeping the valid identity on disk',
          )
          if (onDisk && identity === onDisk) publisher.publish(onDisk) // else the new one was, as it was adopted
          // What failed (a role certificate, the instance's renewal) is retried on the back-off
          // schedule, not a REFRESH_INTERVAL (a day) later.
          retrying = true
        }
      }
    }

    // Aborted when something outside the timer failed and its retry is owed: the role
    // certificates of a key a third party installed (files). The timer backs off from there.
    let retrySoon = new AbortController()
    if (rt.kind === 'files') {
      await go('file-watcher', async (t) => {
        let reloading = Promise.resolve()
        // What was last said of files that are no valid identity: said once, not at each change.
        let said = ''
        const refuse = (event: string, reason: string) => {
          if (reason === said) return
          said = reason
          log.warn(
            { event, keyFile: config.keyFile, certFile: config.certFile, reason },
            `${reason}; keeping the current identity`,
          )
        }
        const reload = async (settled = false): Promise<void> => {
          const next = await readIdentityOrWhy(config)
          if (next instanceof Error) {
            // A half-written pair (key replaced, cert not yet) does not validate: said only if the
            // files are still no pair a moment later, when no writer is half-way any more.
            if (!settled) {
              void pause(INVALID_PAIR_SETTLE_MS, t.signal).then((slept) => {
                if (slept) reloading = reloading.then(() => reload(true))
              })
              return
            }
            return refuse(
              'certificate.files.invalid',
              `${config.keyFile} and ${config.certFile} are no valid identity: ${next.message}`,
            )
          }
          if (next.certPem === identity?.certPem) {
            said = ''
            return
          }
          // Another principal's certificate is not adopted mid-run: its key would sign role
          // certificate requests naming this one (SIA's CSRs take the configured principal).
          if (identity && commonNameOf(next) !== commonNameOf(identity)) {
            return refuse(
              'certificate.files.refused',
              `the new certificate names ${commonNameOf(next)}, not ${commonNameOf(identity)}`,
            )
          }
          said = ''
          adopt(next)
          log.info(
            { event: 'certificate.reloaded', certFile: config.certFile },
            'reloaded the identity from files',
          )
          await slot
            .run((s) => rt.refresher.refreshRoles(next.keyPem, s), t.signal)
            .catch((err: unknown) => {
              if (t.signal.aborted) return
              log.warn(
                { event: 'certificate.refresh.failed', err },
                'role certificates for the new key failed',
              )
              // Retried on the back-off schedule: left to REFRESH_INTERVAL (a day), the role
              // certificates stayed the old key's.
              retrySoon.abort()
            })
        }
        watchFiles(
          [config.keyFile, config.certFile],
          () => {
            reloading = reloading.then(() => reload())
          },
          t.signal,
        )
        await new Promise((r) => t.signal.addEventListener('abort', r, { once: true }))
        await reloading
        return undefined
      })
    }

    // A reload that dropped roles: their files go once this thread is up on the new targets, under
    // the lock (a refresh of the thread it replaces may be writing them).
    if (previous) await exclusive(() => removeDroppedRoleFiles(previous, config, log))
    log.info(
      {
        event: 'certificate.refresh.scheduled',
        keyFile: config.keyFile,
        certFile: config.certFile,
        roles: config.targetDomainRoles,
        provider: rt.kind,
        everyMs: config.refreshInterval,
      },
      `will refresh key[${config.keyFile}], cert[${config.certFile}] and certificates for roles[${config.targetDomainRoles.join(',')}] with provider[${rt.kind}] after ${config.refreshInterval}ms`,
    )
    await go('refresh-timer', async (t) => {
      // REFRESH_INTERVAL=0 disables the periodic refresh, as in SIA, not the refresh half-way
      // through a certificate (refreshPlan): the local authority's lived an hour, then expired.
      const interval = config.refreshInterval || Number.POSITIVE_INFINITY
      // Serving from the backup, or a boot refresh that failed: the provider is retried on the
      // back-off schedule, not in a day.
      let failures = retrying ? 1 : 0
      // REFRESH_INTERVAL after an issue, or half-way through what was issued if that comes first
      // (refreshPlan): a provider issuing certificates shorter than the interval (a day by default)
      // had them expire while the sidecar ran, ready. Not sooner than a retry's first back-off
      // unless the end is nearer; and a file it cannot read is no reason to issue again every few
      // seconds. Files: a third party renews its certificate, only the role certificates are ours.
      const due = async () => {
        const plan = identity && (await refreshPlan(identity, config, Date.now(), rt.kind !== 'files'))
        if (!plan) return config.refreshInterval || MAX_IDLE_BACKOFF_MS
        // Due already when issued (short-lived, or backdated past half its life or the interval):
        // half-way through what is left. A day's wait had it expire while served; the first
        // back-off made every refresh of a certificate backdated past a short interval 5 s apart.
        const next = Math.max(INITIAL_BACKOFF_MS, plan.dueInMs > 0 ? plan.dueInMs : plan.expiresInMs / 2)
        // Never past its end less a margin (at least MIN_TRY_MS: no refresh loop without a pause).
        return Math.min(interval, next, Math.max(MIN_TRY_MS, plan.expiresInMs - EXPIRY_MARGIN_MS))
      }
      // A failure's back-off within what is left of the certificate served (capToEnd); a role
      // certificate not there (refused on a fresh pod): the instance's end.
      const retryIn = async (attempt: number) => {
        const wait = backoffDelay(attempt, INITIAL_BACKOFF_MS, maxBackoffMs)
        if (!identity) return wait
        const plan = await refreshPlan(identity, config, Date.now(), rt.kind !== 'files')
        const left = plan?.expiresInMs ?? endsAt(identity.certPem) - Date.now()
        return capToEnd(wait, left, INITIAL_BACKOFF_MS, MAX_IDLE_BACKOFF_MS)
      }
      let wait = retrying ? await retryIn(0) : freshMs || (await due())
      for (;;) {
        const slept = await pauseOnWall(wait, AbortSignal.any([t.signal, retrySoon.signal]))
        if (t.signal.aborted) break
        if (slept === 'aborted') {
          retrySoon = new AbortController()
          wait = await retryIn(failures++)
          continue
        }
        if (slept === 'stepped') {
          // The wait was planned on a wall clock that has since been stepped: planned again, and
          // a certificate the step put outside its validity is refreshed at once.
          const plan = identity && (await refreshPlan(identity, config, Date.now(), rt.kind !== 'files'))
          const outside = plan !== undefined && (plan.expiresInMs <= 0 || plan.startsInMs > 0)
          wait = outside ? 0 : failures > 0 ? await retryIn(failures - 1) : await due()
          log.info(
            { event: 'certificate.clock.stepped', outsideValidity: outside, nextInMs: wait },
            `the wall clock was stepped; next refresh in ${wait}ms`,
          )
          continue
        }
        try {
          await refreshOnce(t.signal)
          // Back on the interval: the wait a failure (or a reused identity's freshness) set is
          // not kept, or every refresh after one failure came a back-off apart, each a new key.
          wait = await due()
          if (failures > 0)
            log.info(
              { event: 'certificate.refresh.recovered', failures, nextInMs: wait },
              `refresh succeeded after ${failures} failure(s); next in ${wait}ms`,
            )
          failures = 0
        } catch (err) {
          if (t.signal.aborted) break
          wait = await retryIn(failures++)
          log.warn(
            { event: 'certificate.refresh.failed', err, attempt: failures, retryInMs: wait },
            `refresh failed; keeping the current certificates, retrying in ${wait}ms`,
          )
        }
      }
      return undefined
    })
  },
})
