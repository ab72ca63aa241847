/// A runtime log line at info level through swift-log (`TorusLogging`): the text format prints
/// it as `torus: LINE`, as before the switch to swift-log.
@Sendable func runtimeLog(_ line: String) {
    TorusLogging.runtime.info("\(line)")
}
