import { spawnSync } from 'node:child_process'
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs'
import { join, relative } from 'node:path'
import { parseAllDocuments } from 'yaml'

/** The repository's deploy/ folder (the tests run from dist/test/). */
export const REPO = new URL('../../../', import.meta.url).pathname.replace(/\/$/, '')
export const DEPLOY = join(REPO, 'deploy')

export interface Manifest {
  file: string
  index: number
  doc: Record<string, unknown> & { apiVersion: string; kind: string; metadata: { name: string } }
}

/** Every YAML file under `dir`, recursively, sorted. */
export function yamlFiles(dir: string): string[] {
  const out: string[] = []
  for (const name of readdirSync(dir).sort()) {
    const path = join(dir, name)
    if (statSync(path).isDirectory()) out.push(...yamlFiles(path))
    else if (/\.ya?ml$/.test(name)) out.push(path)
  }
  return out
}

/** The documents of one YAML file; a syntax error throws, naming the file. */
export function readYamlDocs(file: string): unknown[] {
  const docs = parseAllDocuments(readFileSync(file, 'utf8'))
  return docs.map((d) => {
    if (d.errors.length) throw new Error(`${relative(REPO, file)}: ${d.errors[0]!.message}`)
    return d.toJS()
  })
}

export function readYaml(file: string): unknown {
  const docs = readYamlDocs(file)
  if (docs.length !== 1)
    throw new Error(`${relative(REPO, file)}: expected one document, found ${docs.length}`)
  return docs[0]
}

export interface Kustomization {
  namespace?: string
  resources?: string[]
  images?: { name: string; newName?: string; newTag?: string }[]
}

/**
 * The Kubernetes objects a kustomization builds, by following its `resources` (files and
 * directories with their own kustomization.yaml), as `kubectl kustomize` does, without the
 * transformations. Throws on a resource that does not exist.
 */
export function kustomizationResources(dir: string): Manifest[] {
  const k = readYaml(join(dir, 'kustomization.yaml')) as Kustomization
  const out: Manifest[] = []
  for (const r of k.resources ?? []) {
    const path = join(dir, r)
    if (!existsSync(path))
      throw new Error(`${relative(REPO, dir)}/kustomization.yaml: resource ${r} does not exist`)
    if (statSync(path).isDirectory()) {
      if (!existsSync(join(path, 'kustomization.yaml')))
        throw new Error(`${relative(REPO, path)} is a resource directory without a kustomization.yaml`)
      out.push(...kustomizationResources(path))
    } else {
      readYamlDocs(path).forEach((doc, index) => {
        out.push({ file: relative(REPO, path), index, doc: doc as Manifest['doc'] })
      })
    }
  }
  return out
}

/** A tool on PATH, or undefined: tests that need it are skipped with a message naming it. */
export function which(tool: string): string | undefined {
  const r = spawnSync('sh', ['-c', `command -v ${tool}`], { encoding: 'utf8' })
  return r.status === 0 ? r.stdout.trim() : undefined
}

/** Parses a Kubernetes memory quantity ("512Mi", "1Gi", "536870912") to bytes. */
export function quantityBytes(q: string | number): number {
  const m = /^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$/.exec(String(q))
  if (!m) throw new Error(`not a memory quantity: ${q}`)
  const unit: Record<string, number> = {
    Ki: 2 ** 10,
    Mi: 2 ** 20,
    Gi: 2 ** 30,
    Ti: 2 ** 40,
    k: 1e3,
    M: 1e6,
    G: 1e9,
    T: 1e12,
  }
  return Number(m[1]) * (m[2] ? unit[m[2]]! : 1)
}
