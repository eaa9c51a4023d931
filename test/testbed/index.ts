// cowstack testbed: real-kernel test cluster (qemu TCG guests + a host tgtd LUN).
// Imported by the integration tests; see README.md in this directory.
export { ensureImage, cacheRoot, readManifest, type ImageInfo, type ImageManifest } from './image.js';
export {
  up,
  attach,
  bootNode,
  down,
  status,
  resolveStateDir,
  envLunSectorBytes,
  TARGET_IQN,
  type Testbed,
  type TestbedNode,
  type ExecResult,
  type UpOptions,
  type TestbedStatus,
} from './testbed.js';
