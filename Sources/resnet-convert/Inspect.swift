import ArgumentParser
import ResNetKit

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show a file's format, detected architecture and tensor table (source name → canonical name).")

    @Argument(help: "A weight file.")
    var file: String?

    @OptionGroup var source: SourceOptions

    @Flag(help: "List the architecture presets --arch accepts.")
    var listPresets = false

    @Flag(help: "Print as JSON.")
    var json = false

    @OptionGroup(title: "Limits") var limits: LimitOptions

    func validate() throws {
        if file == nil && !listPresets { throw ValidationError("give a FILE or --list-presets") }
    }

    func run() throws { try limits.readLimits.apply(runWithLimits) }

    private func runWithLimits() throws {
        if listPresets {
            if json { try Terminal.json(Presets.all); return }
            // `padding(toLength:)` truncates, so the column is as wide as the longest name.
            let width = Presets.all.map(\.name.count).max() ?? 0
            for p in Presets.all { print("\(p.name.padding(toLength: width, withPad: " ", startingAt: 0)) \(p.framework.padding(toLength: 6, withPad: " ", startingAt: 0)) \(p.summary)") }
            return
        }
        guard let file else { return }
        let summary = try inspectFile(path: file, arch: source.arch, mapFile: source.mapFile, weights: source.weights)
        if json { try Terminal.json(summary); return }
        Terminal.show(summary.text)
    }
}
