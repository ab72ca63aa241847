/// A runtime log line at info level through swift-log (`TorusLogging`), labelled `torus`: the
/// text format prints it as `torus: LINE`. Left for the etcd client's lines; the other parts
/// log through their own loggers (`RuntimeLoggers`, a node's `logger`).
@Sendable func runtimeLog(_ line: String) {
    TorusLogging.runtime.info("\(line)")
}
