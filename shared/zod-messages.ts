/**
 * Imported for its side effect by every module that validates with zod: its functional build
 * (`zod/mini`) registers no messages, the full build registers English by itself. Same engine
 * and the same messages, but a bundle of ~20 KB instead of ~580 KB: the full build attaches every
 * method to every schema class at load, which cost ~30 ms of the configuration's load (on the
 * boot's critical path) and of the gateway's boot, and their heap. (A module that re-exported the
 * namespace would keep the whole of it in a bundle: each module imports `zod/mini` itself.)
 */
import { config } from 'zod/mini'
import en from 'zod/v4/locales/en.js'

config(en())
