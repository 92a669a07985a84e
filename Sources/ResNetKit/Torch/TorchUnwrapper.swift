/// Finds the weights inside whatever object a checkpoint holds, and names what it left out.
///
/// The decoded object is searched (dicts, lists, tuples, data records) for candidates: dicts
/// with string keys whose values are tensors, and whole pickled `nn.Module`s. Optimizer and
/// scheduler state is not searched. Each arena object is visited once, so aliased or shared
/// objects cost nothing extra, and the search stops at ``TorchLimits/maxSearchDepth``.
struct TorchUnwrapper {
    let arena: PickleArena
    let file: String
    /// The dotted path `--weights` asked for, if any.
    let weights: String?
    private(set) var tensors: [(name: String, tensor: TorchTensorRef)] = []
    private(set) var notes: [String] = []
    private(set) var ignored: [String] = []
    private(set) var modules: [TorchModuleInfo] = []
    /// Dotted path of the chosen weights; empty for the checkpoint itself.
    private(set) var chosenPath = ""

    /// One step into the checkpoint: a dict key or attribute, or a list / tuple index.
    enum Step: Hashable {
        case key(String)
        case index(Int)
    }

    /// A state dict or whole module the search found.
    struct Candidate {
        var steps: [Step]
        var module: String?
        var tensors: [(String, TorchTensorRef)] = []
        /// Names inside the candidate that are not weights (`_extra_state`, non-persistent buffers …).
        var innerIgnored: [String] = []
        var innerNotes: [String] = []
        var modules: [TorchModuleInfo] = []
        var elements = 0
        var isEMA = false
    }

    private var visited = Set<Int>()
    private var candidates: [Candidate] = []
    private var depthLimited = false
    /// Why a dict or module that looked like weights could not be read; reported when nothing else is found.
    private var rejected: [ResNetError] = []
    /// Modules walked over all candidates. Within one candidate each module is walked once; two
    /// candidates that share a subtree would walk it twice, so the total is capped at the number of
    /// objects the pickle built, which no file whose candidates are separate objects can exceed.
    private var moduleVisits = 0

    /// Wrapper prefixes whose origin is known, for the notes.
    static let knownPrefixes = ["module.": "DataParallel / DistributedDataParallel", "_orig_mod.": "torch.compile",
                                "model.": "a wrapper module's attribute, e.g. Lightning's"]

    init(arena: PickleArena, file: String, weights: String? = nil) {
        self.arena = arena
        self.file = file
        self.weights = weights
    }

    private func bad(_ place: String, _ reason: String) -> ResNetError {
        .invalidInput(file: file, place: place, reason: reason)
    }

    // MARK: paths

    static func dotted(_ steps: [Step]) -> String {
        steps.map { step -> String in
            switch step {
            case let .key(k): return k
            case let .index(i): return String(i)
            }
        }.joined(separator: ".")
    }

    static func place(_ steps: [Step]) -> String {
        "checkpoint" + steps.map { step -> String in
            switch step {
            case let .key(k): return "['\(k)']"
            case let .index(i): return "[\(i)]"
            }
        }.joined()
    }

    /// Whether a path names an exponential-moving-average copy (`state_dict_ema`, `model_ema`, `ema` …).
    static func isEMA(_ steps: [Step], className: String? = nil) -> Bool {
        for case let .key(k) in steps {
            let words = k.lowercased().split(whereSeparator: { !$0.isLetter && !$0.isNumber })
            if words.contains("ema") { return true }
        }
        if let c = className?.split(separator: ".").last?.lowercased(), c.contains("ema") && c.contains("model") { return true }
        return false
    }

    /// Keys under which training code keeps optimizer and scheduler state.
    static func isTrainingStateName(_ key: String) -> Bool {
        let k = key.lowercased()
        return k.contains("optim") || k.contains("sched")
    }

    func isOptimizerState(_ d: PickleDict) -> Bool {
        d.value(forString: "state") != nil && d.value(forString: "param_groups") != nil
    }

    func isSchedulerState(_ d: PickleDict) -> Bool {
        d.value(forString: "last_epoch") != nil && (d.value(forString: "base_lrs") != nil || d.value(forString: "_step_count") != nil)
    }

    static func isExtraState(_ name: String) -> Bool { name == "_extra_state" || name.hasSuffix("._extra_state") }

    /// A dict with string keys whose values are tensors, at least one of them not a scalar, and
    /// at most a few other values (listed as ignored when chosen).
    func isStateDict(_ d: PickleDict) -> Bool {
        var tensors = 0, weights = 0, others = 0
        for (k, v) in zip(d.keys, d.values) {
            guard case let .string(name) = k else { return false }
            if let t = arena.tensor(v) {
                tensors += 1
                if !t.shape.isEmpty { weights += 1 }
            } else if !Self.isExtraState(name) {
                others += 1
            }
        }
        return weights > 0 && others <= 4 && others < tensors
    }

    /// Attributes of a data record that can be searched: its BUILD state dict and its dict items.
    func recordMembers(_ r: ModuleRecord) -> [(PickleValue, PickleValue)] {
        var out: [(PickleValue, PickleValue)] = Array(zip(r.entries.keys, r.entries.values))
        if let s = r.state, let d = arena.dict(s) { out += zip(d.keys, d.values) }
        return out
    }

    static func step(_ key: PickleValue) -> Step? {
        switch key {
        case let .string(s): return .key(s)
        case let .int(i): return .index(i)
        default: return nil
        }
    }

    // MARK: describing what is left out

    /// A short description of a value for the notes: `optimizer state`, `argparse.Namespace`, `0-d tensor`, `int`.
    func kind(_ v: PickleValue, key: String? = nil) -> String {
        switch arena.object(v) {
        case let .dict(d)?:
            if isOptimizerState(d) { return "optimizer state" }
            if isSchedulerState(d) { return "scheduler state" }
            if isStateDict(d) { return "state dict, \(d.values.count) entries" }
        case let .list(items)?, let .tuple(items)?:
            if !items.isEmpty, items.allSatisfy({ arena.dict($0).map(isOptimizerState) ?? false }) { return "optimizer state" }
            if !items.isEmpty, items.allSatisfy({ arena.dict($0).map(isSchedulerState) ?? false }) { return "scheduler state" }
        case let .tensor(t)?:
            return t.shape.isEmpty ? "0-d tensor" : "tensor \(t.shape)"
        case let .record(r)?:
            if arena.module(v) != nil { return "nn.Module \(r.className.split(separator: ".").last ?? "")" }
            return r.className
        default:
            break
        }
        if let key, Self.isTrainingStateName(key) {
            return key.lowercased().contains("sched") ? "scheduler state" : "optimizer state"
        }
        return arena.kindName(v)
    }

    // MARK: search

    private mutating func search(_ v: PickleValue, _ steps: [Step], depth: Int) throws {
        guard case let .object(i) = v else { return }
        guard depth <= TorchLimits.maxSearchDepth else { depthLimited = true; return }
        guard visited.insert(i).inserted else { return }
        switch arena.objects[i] {
        case let .dict(d):
            if isOptimizerState(d) || isSchedulerState(d) { return }
            if isStateDict(d) {
                do { candidates.append(try stateDictCandidate(d, steps)) } catch let e as ResNetError { rejected.append(e) }
                return
            }
            try searchMembers(Array(zip(d.keys, d.values)), steps, depth: depth)
        case let .list(items), let .tuple(items):
            for (n, item) in items.enumerated() { try search(item, steps + [.index(n)], depth: depth + 1) }
        case let .record(r):
            if arena.module(v) != nil {
                do { candidates.append(try moduleCandidate(v, steps)) } catch let e as ResNetError { rejected.append(e) }
                return
            }
            try searchMembers(recordMembers(r), steps, depth: depth)
        default:
            return
        }
    }

    private mutating func searchMembers(_ members: [(PickleValue, PickleValue)], _ steps: [Step], depth: Int) throws {
        for (k, value) in members {
            guard let step = Self.step(k) else { continue }
            if case let .key(s) = step, Self.isTrainingStateName(s) { continue }
            try search(value, steps + [step], depth: depth + 1)
        }
    }

    /// A state dict maps names to tensors; the only other values torch puts there are
    /// `*._extra_state` entries (`nn.Module.get_extra_state`), which are not weights. A few other
    /// values are tolerated and listed as ignored.
    private func stateDictCandidate(_ d: PickleDict, _ steps: [Step]) throws -> Candidate {
        var c = Candidate(steps: steps, module: nil)
        var extra = 0
        var others: [String] = []
        for (k, v) in zip(d.keys, d.values) {
            guard case let .string(name) = k else {
                throw bad("state dict \(Self.place(steps))", "has a key of type \(arena.kindName(k)), not a string")
            }
            if let t = arena.tensor(v) {
                c.tensors.append((name, t))
                c.elements += t.shape.reduce(1, *)
            } else if Self.isExtraState(name) {
                c.innerIgnored.append(name)
                extra += 1
            } else {
                c.innerIgnored.append(name)
                others.append("\(name) (\(kind(v)))")
            }
        }
        if extra > 0 { c.innerNotes.append("\(extra) _extra_state entries ignored") }
        if !others.isEmpty { c.innerNotes.append("state dict entries that are not tensors ignored: \(others.joined(separator: ", "))") }
        if d.attributes != nil { c.innerNotes.append("state dict attribute _metadata (per-module versions) ignored") }
        c.isEMA = Self.isEMA(steps)
        return c
    }

    private mutating func moduleCandidate(_ v: PickleValue, _ steps: [Step]) throws -> Candidate {
        guard let record = arena.module(v) else { throw bad(Self.place(steps), "is a \(arena.kindName(v)), not an nn.Module") }
        var c = Candidate(steps: steps, module: record.className)
        var seen: [Int: String] = [:]
        var onPath = Set<Int>()
        try moduleWalk(v, prefix: "", depth: 0, into: &c, seen: &seen, onPath: &onPath, visits: &moduleVisits)
        c.isEMA = Self.isEMA(steps, className: record.className)
        return c
    }

    // MARK: choosing

    mutating func unwrap(_ root: PickleValue) throws {
        var chosen: Candidate
        if let weights {
            chosen = try resolve(weights, root)
            notes.append("weights taken from \(Self.place(chosen.steps)) (\(chosen.tensors.count) tensors), as --weights asked")
        } else {
            try search(root, [], depth: 0)
            guard !candidates.isEmpty else { throw rejected.first ?? noWeights(root) }
            let plain = candidates.filter { !$0.isEMA }
            let pool = plain.isEmpty ? candidates : plain
            var best = pool[0]
            for c in pool.dropFirst() where c.elements > best.elements { best = c }
            chosen = best
            let where_ = chosen.steps.isEmpty ? "the checkpoint itself" : Self.place(chosen.steps)
            if chosen.isEMA {
                notes.append("weights taken from the EMA copy \(where_) (\(chosen.tensors.count) tensors): the checkpoint has no other weights")
            } else if !chosen.steps.isEmpty {
                notes.append("weights taken from \(where_) (\(chosen.tensors.count) tensors)")
            }
            let others = candidates.filter { $0.steps != chosen.steps }
            for c in others.prefix(8) {
                let path = Self.dotted(c.steps)
                if c.isEMA {
                    notes.append("EMA copy '\(path)' not used; pass --weights \(path) to take it")
                } else {
                    notes.append("also holds \(Self.place(c.steps)) (\(c.tensors.count) tensors), not used; pass --weights \(path) to take it")
                }
            }
            if others.count > 8 { notes.append("\(others.count - 8) more dicts of tensors not used") }
            if depthLimited { notes.append("objects nested deeper than \(TorchLimits.maxSearchDepth) levels were not searched") }
        }
        chosenPath = Self.dotted(chosen.steps)
        for e in rejected.prefix(3) { notes.append("not used, as it cannot be read: \(e.description)") }
        if rejected.count > 3 { notes.append("… \(rejected.count - 3) more not used, as they cannot be read") }
        if let module = chosen.module {
            notes.append("whole pickled nn.Module \(module)\(chosen.steps.isEmpty ? "" : " at '\(chosenPath)'"): tensors taken from its _parameters and _buffers")
        }
        reportSiblings(root, chosen.steps)
        notes += chosen.innerNotes
        try finish(chosen)
    }

    /// Lists, for each dict or record on the way to the weights, the entries that were left out.
    private mutating func reportSiblings(_ root: PickleValue, _ steps: [Step]) {
        var value = root
        var prefix: [Step] = []
        var described: [String] = []
        var end = root
        for step in steps { if let next = Self.child(arena, end, step) { end = next } }
        var chosenObject = -1
        if case let .object(o) = end { chosenObject = o }
        let candidatePaths = Set(candidates.map(\.steps))
        for step in steps {
            let members: [(PickleValue, PickleValue)]
            if let d = arena.dict(value) {
                members = Array(zip(d.keys, d.values))
            } else if let r = arena.record(value) {
                members = recordMembers(r)
            } else {
                members = []
            }
            for (k, v) in members {
                guard let s = Self.step(k) else {
                    ignored.append(Self.dotted(prefix) + "<\(arena.kindName(k)) key>")
                    continue
                }
                if s == step { continue }
                let path = Self.dotted(prefix + [s])
                ignored.append(path)
                var key: String?
                if case let .key(name) = s { key = name }
                let isCandidate = candidatePaths.contains(prefix + [s])
                var description = isCandidate && Self.isEMA(prefix + [s]) ? "EMA copy" : kind(v, key: key)
                if case let .object(o) = v, o == chosenObject { description = "the same object as the weights" }
                described.append("\(path) (\(description))")
            }
            guard let next = Self.child(arena, value, step) else { break }
            value = next
            prefix.append(step)
        }
        if ignored.count > 1000 { ignored = Array(ignored.prefix(1000)) + ["… \(ignored.count - 1000) more"] }
        if !described.isEmpty {
            notes.append("not weights, ignored: \(firstItems(described, 24))")
        }
    }

    static func child(_ arena: PickleArena, _ value: PickleValue, _ step: Step) -> PickleValue? {
        switch (arena.object(value), step) {
        case let (.dict(d)?, .key(k)):
            return d.value(forString: k)
        case let (.dict(d)?, .index(i)):
            return d.index[.int(i)].map { d.values[$0] }
        case let (.list(items)?, .index(i)), let (.tuple(items)?, .index(i)):
            return items.indices.contains(i) ? items[i] : nil
        case let (.record(r)?, .key(k)):
            if let v = r.entries.value(forString: k) { return v }
            if let s = r.state, let d = arena.dict(s) { return d.value(forString: k) }
            return nil
        default:
            return nil
        }
    }

    /// Follows a `--weights` path. Keys may themselves contain dots: the longest key that
    /// matches the start of what is left is taken.
    private mutating func resolve(_ path: String, _ root: PickleValue) throws -> Candidate {
        var value = root
        var steps: [Step] = []
        var rest = Substring(path)
        while !rest.isEmpty {
            var keys: [String] = []
            switch arena.object(value) {
            case let .dict(d)?:
                keys = d.keys.compactMap { k in
                    switch k {
                    case let .string(s): return s
                    case let .int(i): return String(i)
                    default: return nil
                    }
                }
            case let .list(items)?, let .tuple(items)?:
                keys = items.indices.map(String.init)
            case let .record(r)?:
                keys = recordMembers(r).compactMap { if case let .string(s) = $0.0 { return s }; return nil }
            default:
                break
            }
            let match = keys.filter { rest == $0 || rest.hasPrefix($0 + ".") }.max { $0.count < $1.count }
            guard let match else {
                throw noSuchWeights(path, root, at: steps)
            }
            let step: Step
            if case .dict? = arena.object(value), arena.dict(value)?.value(forString: match) != nil {
                step = .key(match)
            } else if let i = Int(match), arena.sequence(value) != nil || arena.dict(value) != nil {
                step = .index(i)
            } else {
                step = .key(match)
            }
            guard let next = Self.child(arena, value, step) else { throw noSuchWeights(path, root, at: steps) }
            value = next
            steps.append(step)
            rest = rest.dropFirst(match.count)
            if rest.hasPrefix(".") { rest = rest.dropFirst() }
        }
        if arena.module(value) != nil { return try moduleCandidate(value, steps) }
        if let d = arena.dict(value), d.values.contains(where: { arena.tensor($0) != nil }) {
            return try stateDictCandidate(d, steps)
        }
        throw ResNetError.usage("--weights \(path): \(Self.place(steps)) in \(file) is \(kind(value)), not a state dict or an nn.Module; \(candidateList(root))")
    }

    private mutating func candidateList(_ root: PickleValue) -> String {
        if candidates.isEmpty && visited.isEmpty { try? search(root, [], depth: 0) }
        guard !candidates.isEmpty else { return "the checkpoint holds no state dict or nn.Module" }
        let list = candidates.map { c -> String in
            let path = c.steps.isEmpty ? "'' (the checkpoint itself)" : Self.dotted(c.steps)
            return "\(path) (\(c.tensors.count) tensors\(c.isEMA ? ", EMA" : ""))"
        }
        return "weights found at: \(list.joined(separator: ", "))"
    }

    private mutating func noSuchWeights(_ path: String, _ root: PickleValue, at steps: [Step]) -> ResNetError {
        .usage("--weights \(path): \(file) has no entry '\(path)' (\(steps.isEmpty ? "nothing matched at the top level" : "found \(Self.place(steps)), nothing below it matched")); \(candidateList(root))")
    }

    private func noWeights(_ root: PickleValue) -> ResNetError {
        var what = "the checkpoint is a \(kind(root)): not a state dict, and no state dict (a dict of tensors) or nn.Module was found inside it"
        if let d = arena.dict(root) {
            let keys = zip(d.keys, d.values).prefix(20).map { k, v -> String in
                let name: String
                switch k {
                case let .string(s): name = s
                default: name = "<\(arena.kindName(k))>"
                }
                var key: String?
                if case let .string(s) = k { key = s }
                return "\(name) (\(kind(v, key: key)))"
            }
            what = "no state dict (a dict of tensors) or nn.Module found; keys are: \(firstItems(keys, 20, total: d.keys.count))"
        }
        if depthLimited { what += " (objects nested deeper than \(TorchLimits.maxSearchDepth) levels were not searched)" }
        return bad("checkpoint", what)
    }

    // MARK: prefixes and counters

    /// Removes every leading dotted component all weight keys share, as long as each key keeps a
    /// module path (so `fc.weight` alone stays `fc.weight`), and moves `num_batches_tracked` to ignored.
    private mutating func finish(_ chosen: Candidate) throws {
        guard !chosen.tensors.isEmpty else { throw bad(Self.place(chosen.steps), "no tensors found") }
        guard chosen.tensors.count <= TorchLimits.maxTensors else {
            throw bad(Self.place(chosen.steps), "holds \(chosen.tensors.count) tensors; at most \(TorchLimits.maxTensors) are read from one checkpoint")
        }
        var names = chosen.tensors.map(\.0)
        // The shared prefix is found in one pass over the keys' bytes and removed once: peeling one
        // component at a time costs keys × components × key length, which a key of a few hundred
        // thousand components turns into hours.
        let first = Array(names[0].utf8)
        let dot = UInt8(ascii: ".")
        let dotEnds = first.indices.filter { first[$0] == dot }.map { $0 + 1 }   // byte length of each prefix
        var shared = max(dotEnds.count - 1, 0)   // every key keeps at least one dot
        for name in names.dropFirst() where shared > 0 {
            var common = 0, dots = 0, diverged = false
            for byte in name.utf8 {
                if byte == dot { dots += 1 }
                if !diverged {
                    if common < first.count, byte == first[common] { common += 1 } else { diverged = true }
                }
            }
            // Components of the first key that this one starts with, leaving it a dot of its own.
            var matched = 0
            while matched < shared, dotEnds[matched] <= common { matched += 1 }
            shared = min(matched, max(dots - 1, 0))
        }
        var components: [String] = []
        var start = 0
        for end in dotEnds.prefix(shared) {
            components.append(String(decoding: first[start..<end], as: UTF8.self))
            start = end
        }
        let removed = components.joined()
        let removedBytes = removed.utf8.count
        if removedBytes > 0 {
            names = names.map { String(decoding: $0.utf8.dropFirst(removedBytes), as: UTF8.self) }
        }
        // Names left out of the weights lose each component they start with, in turn, as before.
        let componentBytes = components.map { Array($0.utf8) }
        let inner = chosen.innerIgnored.map { name -> String in
            let bytes = Array(name.utf8)
            var cursor = 0
            for c in componentBytes where bytes.count - cursor >= c.count && bytes[cursor..<cursor + c.count].elementsEqual(c) {
                cursor += c.count
            }
            return cursor == 0 ? name : String(decoding: bytes[cursor...], as: UTF8.self)
        }
        if components.count <= 4 {
            for prefix in components {
                let origin = Self.knownPrefixes[prefix].map { " (\($0))" } ?? ""
                notes.append("prefix '\(prefix)' removed from all \(names.count) keys\(origin)")
            }
        } else {
            notes.append("prefix '\(removed)' (\(components.count) components) removed from all \(names.count) keys")
        }
        if chosen.module != nil {
            var kept: [TorchModuleInfo] = []
            var dropped = 0
            for var m in chosen.modules {
                let full = m.path.isEmpty ? "" : m.path + "."
                if full.hasPrefix(removed) {
                    m.path = String(m.path.dropFirst(min(removed.count, m.path.count)))
                    if let s = m.sharedWith { m.sharedWith = s.hasPrefix(removed) ? String(s.dropFirst(removed.count)) : s }
                    kept.append(m)
                } else {
                    dropped += 1 // a wrapper around the model (DataParallel …): not part of its structure
                }
            }
            if dropped > 0 { notes.append("\(dropped) wrapper module\(dropped == 1 ? "" : "s") above the removed prefix left out of the module tree") }
            modules = kept
        }
        ignored += inner
        var skipped = 0
        for (name, (_, t)) in zip(names, chosen.tensors) {
            if name == "num_batches_tracked" || name.hasSuffix(".num_batches_tracked") {
                ignored.append(name)
                skipped += 1
            } else {
                tensors.append((name, t))
            }
        }
        if skipped > 0 { notes.append("\(skipped) num_batches_tracked counters ignored") }
    }

    // MARK: whole modules

    /// `nn.Module.state_dict()` order: a module's parameters, then its persistent buffers, then
    /// each submodule's, recursively with dotted names. A submodule met again (the same object
    /// registered twice) is recorded with `sharedWith` and not walked again; a module that
    /// contains itself is refused.
    private func moduleWalk(_ value: PickleValue, prefix: String, depth: Int, into c: inout Candidate,
                            seen: inout [Int: String], onPath: inout Set<Int>, visits: inout Int) throws {
        visits += 1
        guard visits <= arena.objects.count else {
            throw bad(Self.place(c.steps), "module trees of several candidates share submodules; choose one with --weights")
        }
        guard let record = arena.record(value) else { throw bad(prefix, "is a \(arena.kindName(value)), not a module") }
        let path = String(prefix.dropLast())
        let place = prefix.isEmpty ? "module \(record.className)" : "module '\(path)' (\(record.className))"
        let maxDepth = ReadLimits.current.maxPickleDepth
        guard depth < maxDepth else { throw bad(place, ReadLimits.current.reason(.pickleDepth, found: "modules nested deeper than \(maxDepth)")) }
        guard let state = record.state, let attributes = arena.dict(state) else {
            throw bad(place, "object has no attribute dict: not an nn.Module")
        }
        guard let params = attributes.value(forString: "_parameters").flatMap(arena.dict),
              let children = attributes.value(forString: "_modules").flatMap(arena.dict) else {
            throw bad(place, "object has no _parameters / _modules: not an nn.Module")
        }
        c.modules.append(moduleInfo(path: path, record: record, attributes: attributes, parameters: params))
        var nonPersistent = Set<String>()
        if let v = attributes.value(forString: "_non_persistent_buffers_set") {
            switch arena.object(v) {
            case let .set(items)?: for case let .string(s) in items { nonPersistent.insert(s) }
            case let .record(r)?: for case let .string(s) in r.arguments.flatMap({ arena.sequence($0) ?? [$0] }) { nonPersistent.insert(s) }
            default: break
            }
        }
        func entries(_ d: PickleDict, _ what: String) throws -> [(String, PickleValue)] {
            try zip(d.keys, d.values).map { k, v in
                guard case let .string(s) = k else { throw bad(place, "\(what) key is a \(arena.kindName(k))") }
                return (s, v)
            }
        }
        for (name, v) in try entries(params, "_parameters") {
            if case .none = v { continue }
            guard let t = arena.tensor(v) else { throw bad(place, "parameter '\(name)' is a \(arena.kindName(v)), not a tensor") }
            c.tensors.append((prefix + name, t))
            c.elements += t.shape.reduce(1, *)
        }
        if let buffers = attributes.value(forString: "_buffers").flatMap(arena.dict) {
            for (name, v) in try entries(buffers, "_buffers") {
                if case .none = v { continue }
                guard let t = arena.tensor(v) else { throw bad(place, "buffer '\(name)' is a \(arena.kindName(v)), not a tensor") }
                if nonPersistent.contains(name) { c.innerIgnored.append(prefix + name); continue }
                c.tensors.append((prefix + name, t))
                c.elements += t.shape.reduce(1, *)
            }
        }
        guard case let .object(me) = value else { return }
        onPath.insert(me)
        defer { onPath.remove(me) }
        for (name, v) in try entries(children, "_modules") {
            if case .none = v { continue }
            guard let child = arena.record(v), case let .object(ci) = v else {
                throw bad(place, "submodule '\(name)' is a \(arena.kindName(v)), not a module")
            }
            let childPath = prefix + name
            if onPath.contains(ci) {
                throw bad(place, "submodule '\(name)' contains the module it belongs to (a cycle): not an nn.Module tree")
            }
            if let first = seen[ci] {
                c.modules.append(TorchModuleInfo(path: childPath, className: child.className, sharedWith: first))
                c.innerNotes.append("module '\(childPath)' is the same object as '\(first)': its tensors are listed once, under '\(first)'")
                continue
            }
            seen[ci] = childPath
            try moduleWalk(v, prefix: childPath + ".", depth: depth + 1, into: &c, seen: &seen, onPath: &onPath, visits: &visits)
        }
    }

    static let intAttributes: Set<String> = ["kernel_size", "stride", "padding", "dilation", "groups", "in_channels", "out_channels",
                                             "in_features", "out_features", "num_features", "output_size", "output_padding",
                                             "start_dim", "end_dim"]
    static let floatAttributes: Set<String> = ["eps", "momentum", "p", "negative_slope"]
    static let flagAttributes: Set<String> = ["inplace", "affine", "track_running_stats", "ceil_mode", "count_include_pad"]
    static let stringAttributes: Set<String> = ["padding", "padding_mode"]

    /// The hyper-parameters `torch.nn` layers keep as plain attributes.
    func moduleInfo(path: String, record: ModuleRecord, attributes: PickleDict, parameters: PickleDict) -> TorchModuleInfo {
        var info = TorchModuleInfo(path: path, className: record.className)
        for (k, v) in zip(attributes.keys, attributes.values) {
            guard case let .string(name) = k else { continue }
            switch v {
            case let .int(i) where Self.intAttributes.contains(name):
                info.ints[name] = [i]
            case let .float(f) where Self.floatAttributes.contains(name):
                info.floats[name] = f
            case let .int(i) where Self.floatAttributes.contains(name):
                info.floats[name] = Double(i)
            case let .bool(b) where Self.flagAttributes.contains(name):
                info.flags[name] = b
            case let .string(s) where Self.stringAttributes.contains(name):
                info.strings[name] = s
            case .object where Self.intAttributes.contains(name):
                guard let items = arena.sequence(v), items.count <= 8 else { continue }
                var ints: [Int] = []
                for item in items {
                    switch item {
                    case let .int(i): ints.append(i)
                    case .none: ints.append(-1)
                    default: break
                    }
                }
                if ints.count == items.count { info.ints[name] = ints }
            default:
                break
            }
        }
        if let bias = parameters.value(forString: "bias") {
            info.flags["bias"] = arena.tensor(bias) != nil
        }
        return info
    }
}
