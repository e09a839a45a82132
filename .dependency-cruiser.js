/**
 * The layer order of src/ (docs/ARCHITECTURE.md, "Layers"), checked on every `npm test`.
 *
 * A module imports only from its own folder and from folders in LOWER layers; folders in one layer
 * never import each other (the daemon composes them, through interfaces each consumer owns). A
 * top-level file (src/limits.ts, src/errors.ts) is its own folder.
 */
const LAYERS = [
  ['cli'],
  ['daemon'],
  ['fuse', 'rlink', 'control', 'ibc', 'rvg', 'snapshot', 'sync', 'metrics'],
  ['apply'],
  ['srl'],
  ['format'],
  ['native', 'limits', 'errors']
]

/** A path regex matching a folder of src/ (or the top-level file of that name). */
const folder = (name) => `^src/${name}(/|\\.ts$)`

const forbidden = [
  {
    name: 'no-circular',
    severity: 'error',
    comment: 'Modules must not import each other in a cycle.',
    from: {},
    to: { circular: true }
  },
  {
    name: 'only-src-layers',
    severity: 'error',
    comment: 'Every folder of src/ is in the layer table of .dependency-cruiser.js (add a new one there).',
    from: { path: '^src/', pathNot: `^src/(${LAYERS.flat().join('|')})(/|\\.ts$)` },
    to: {}
  }
]

LAYERS.forEach((layer, i) => {
  for (const name of layer) {
    const notBelow = [...LAYERS.slice(0, i).flat(), ...layer.filter((other) => other !== name)]
    if (notBelow.length === 0) continue
    forbidden.push({
      name: `layer-${name}`,
      severity: 'error',
      comment: `src/${name} (layer ${i}) may import only its own folder and lower layers, not ${notBelow.join(', ')}.`,
      from: { path: folder(name) },
      to: { path: `^src/(${notBelow.join('|')})(/|\\.ts$)` }
    })
  }
})

module.exports = {
  forbidden,
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(node_modules|dist)/' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    reporterOptions: {
      dot: { collapsePattern: '^src/[^/]+' }
    }
  }
}
