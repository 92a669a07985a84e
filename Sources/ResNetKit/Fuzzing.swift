import Foundation

/// Entry points for the libFuzzer harnesses in `tools/fuzz`: each runs one reader over bytes
/// exactly as the public readers do, for parsers that have no public bytes-in entry. Not API.
@_spi(Fuzzing)
public enum FuzzEntry {
    /// Runs the restricted pickle machine over a bare pickle (as `data.pkl` of a zip checkpoint), then
    /// the search for the weights over what it decoded.
    public static func pickle(_ data: Data, moduleRecords: Bool = true) throws {
        try data.withUnsafeBytes { raw in
            var machine = PickleMachine(bytes: raw, start: 0, file: "<fuzz>", member: "data.pkl",
                                        policy: moduleRecords ? .moduleRecords : .stateDict)
            let root = try machine.run()
            // The search for the weights walks whatever the pickle built (aliases, records, deep nesting).
            var unwrapper = TorchUnwrapper(arena: machine.arena, file: "<fuzz>")
            try unwrapper.unwrap(root)
        }
    }

    /// Parses Keras model-config JSON and builds the flat layer graph from it.
    public static func kerasConfig(_ data: Data) throws {
        let json = try parseKerasJSON(data, file: "<fuzz>", place: "config.json")
        var builder = KerasGraphBuilder(file: "<fuzz>", place: "config.json")
        _ = try builder.build(json)
    }
}
