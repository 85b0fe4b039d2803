export { loadWorkerConfig, WorkerConfigError, type WorkerConfig } from './config.ts'
export { startWorker, type RunningWorker } from './worker.ts'
