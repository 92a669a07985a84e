import Foundation

/// Phase timings for performance work: with `RESNET_CONVERT_TRACE` set in the environment, each
/// call prints one line to standard error, `trace <unix seconds> <label>`, the time taken from the
/// wall clock (CLOCK_REALTIME) so a shell can line it up with its own `$EPOCHREALTIME`. Silent and
/// nearly free (one flag test) otherwise.
public enum PhaseTrace {
    static let enabled = getenv("RESNET_CONVERT_TRACE") != nil

    /// Prints `label` with the current time when tracing is on.
    public static func mark(_ label: @autoclosure () -> String) {
        guard enabled else { return }
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        let line = String(format: "trace %d.%06d ", Int(ts.tv_sec), Int(ts.tv_nsec / 1000)) + label() + "\n"
        FileHandle.standardError.write(Data(line.utf8))
    }
}
