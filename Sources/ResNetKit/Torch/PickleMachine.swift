/// A restricted, data-only pickle machine for PyTorch checkpoints.
///
/// It understands the opcodes torch writes (protocols 0–5 as far as checkpoints use them) and
/// interprets a short allow-list of globals itself; it never imports, looks up or calls anything.
/// Every other global is refused at the opcode that names it, with an error naming the global.
/// All counts and lengths come from the file and are checked against the remaining bytes and
/// ``TorchLimits`` and ``ReadLimits`` before use. The machine keeps no recursion: nesting lives in explicit stacks.
struct PickleMachine {
    let bytes: UnsafeRawBufferPointer
    let file: String
    /// Where the pickle sits, for messages: `archive/data.pkl` or `legacy stream`.
    let member: String
    let policy: PicklePolicy
    /// Legacy streams add view metadata to storage ids and may name module classes by id.
    let legacyPersistentIds: Bool

    private(set) var position: Int
    private let limit: Int
    /// Captured once: a task-local lookup per opcode would cost more than the check.
    private let limits = ReadLimits.current
    private var opStart = 0
    private var opName = ""
    private var stack: [PickleValue] = []
    private var marks: [Int] = []
    private var memo: [Int: PickleValue] = [:]
    private(set) var arena = PickleArena()
    /// Module classes instantiated as inert records, by qualified name, in first-seen order.
    private(set) var recordClasses: [String] = []
    /// Data classes (``PickleGlobal/recordClass(_:)``, enum members, numpy arrays) made into inert records.
    private(set) var dataRecordClasses: [String] = []
    /// The names in the two lists above: a pickle may name hundreds of thousands of classes, so
    /// membership is a hash lookup, not a scan of the list.
    private var seenRecordClasses = Set<String>()
    private var seenDataRecordClasses = Set<String>()
    /// Every stored storage the persistent ids named, by key, in first-seen order.
    private(set) var storages: [String: TorchStorageRef] = [:]
    private(set) var storageOrder: [String] = []

    /// Runs one pickle starting at `start` of `bytes` (which must outlive the machine).
    init(bytes: UnsafeRawBufferPointer, start: Int, file: String, member: String, policy: PicklePolicy,
         legacyPersistentIds: Bool = false) {
        self.bytes = bytes
        self.file = file
        self.member = member
        self.policy = policy
        self.legacyPersistentIds = legacyPersistentIds
        self.position = start
        let (end, overflow) = start.addingReportingOverflow(limits.maxHeaderBytes)
        self.limit = overflow ? bytes.count : min(bytes.count, end)
    }

    // MARK: errors

    func fail(_ reason: String) -> ResNetError {
        .invalidInput(file: file, place: "\(member) byte \(opStart)\(opName.isEmpty ? "" : " (\(opName))")", reason: reason)
    }

    private func refuse(_ module: String, _ name: String) -> ResNetError {
        if let why = Self.deniedReason(module, name) {
            return fail("refused global '\(module).\(name)': it exists to run code (\(why)); nothing was executed")
        }
        return fail("refused global '\(module).\(name)': it is not on the allow-list of data-only checkpoint globals; nothing was executed")
    }

    // MARK: reading bytes

    private mutating func take(_ n: Int) throws -> UnsafeRawBufferPointer {
        guard n >= 0, n <= limit - position else {
            if limit < bytes.count && n <= bytes.count - position {
                throw fail(limits.reason(.headerBytes, found: "the pickle is longer than \(limits.maxHeaderBytes) bytes"))
            }
            throw fail("needs \(n) bytes but only \(limit - position) remain: truncated pickle")
        }
        let slice = UnsafeRawBufferPointer(rebasing: bytes[position..<(position + n)])
        position += n
        return slice
    }

    private mutating func u8() throws -> UInt8 { try take(1)[0] }

    private mutating func le<T: FixedWidthInteger>(_: T.Type) throws -> T {
        let raw = try take(MemoryLayout<T>.size)
        var v: T = 0
        for (i, b) in raw.enumerated() { v |= T(truncatingIfNeeded: b) << (8 * i) }
        return v
    }

    /// A length field; must fit in the remaining bytes (checked again by `take`).
    private mutating func length<T: FixedWidthInteger>(_: T.Type) throws -> Int {
        let v = try le(T.self)
        guard let n = Int(exactly: v), n >= 0 else { throw fail("length \(v) is negative or too large") }
        return n
    }

    /// A newline-terminated text argument (protocol 0 opcodes).
    private mutating func line() throws -> String {
        var end = position
        while end < limit && bytes[end] != 0x0A {
            end += 1
            guard end - position <= 1024 else { throw fail("text argument longer than 1024 bytes") }
        }
        guard end < limit else { throw fail("text argument is not terminated by a newline") }
        let raw = try take(end - position)
        position += 1
        guard let s = String(validating: raw, as: UTF8.self) else { throw fail("text argument is not UTF-8") }
        return s
    }

    private func utf8(_ raw: UnsafeRawBufferPointer) throws -> String {
        guard let s = String(validating: raw, as: UTF8.self) else { throw fail("string is not valid UTF-8") }
        return s
    }

    // MARK: stack

    private mutating func push(_ v: PickleValue) throws {
        guard stack.count < TorchLimits.maxStackItems else {
            throw fail("more than \(TorchLimits.maxStackItems) values on the stack")
        }
        stack.append(v)
    }

    private mutating func pop() throws -> PickleValue {
        guard stack.count > (marks.last ?? 0) else { throw fail("stack underflow") }
        return stack.removeLast()
    }

    private func top() throws -> PickleValue {
        guard stack.count > (marks.last ?? 0), let v = stack.last else { throw fail("stack underflow") }
        return v
    }

    private mutating func popMark() throws -> [PickleValue] {
        guard let m = marks.popLast() else { throw fail("no MARK to pop to") }
        let items = Array(stack[m...])
        stack.removeSubrange(m...)
        return items
    }

    private mutating func newObject(_ o: PickleObject) throws -> PickleValue {
        guard arena.objects.count < TorchLimits.maxObjects else {
            throw fail("more than \(TorchLimits.maxObjects) containers in one pickle")
        }
        arena.objects.append(o)
        return .object(arena.objects.count - 1)
    }

    private mutating func memoize(_ index: Int) throws {
        let v = try top()
        if memo[index] == nil && memo.count >= limits.maxPickleMemo {
            throw fail(limits.reason(.pickleMemo, found: "more than \(limits.maxPickleMemo) memo entries"))
        }
        memo[index] = v
    }

    private func memoGet(_ index: Int) throws -> PickleValue {
        guard let v = memo[index] else { throw fail("memo index \(index) was never set") }
        return v
    }

    /// Applies `change` to the container on top of the stack.
    private mutating func mutateTop(_ what: String, _ change: (inout PickleObject) throws -> Bool) throws {
        guard case let .object(i) = try top() else {
            throw fail("\(what) needs a container on the stack, found \(try top().kindName)")
        }
        guard try change(&arena.objects[i]) else {
            throw fail("\(what) cannot be applied to a \(arena.objects[i].kindName)")
        }
    }

    private func int(_ v: PickleValue, _ what: String) throws -> Int {
        switch v {
        case let .int(i): return i
        case let .bool(b): return b ? 1 : 0
        default: throw fail("\(what) must be an int, found \(arena.kindName(v))")
        }
    }

    // MARK: running

    /// Runs to STOP and returns the pickled object.
    mutating func run() throws -> PickleValue {
        while true {
            opStart = position
            opName = ""
            guard position < limit else {
                if limit < bytes.count { throw fail(limits.reason(.headerBytes, found: "the pickle is longer than \(limits.maxHeaderBytes) bytes")) }
                throw fail("pickle ends without STOP")
            }
            let op = bytes[position]
            position += 1
            opName = Self.name(of: op)
            switch op {
            case 0x80: // PROTO
                let v = try u8()
                guard v <= 5 else { throw fail("pickle protocol \(v) is newer than 5") }
            case 0x95: // FRAME: a length hint only
                _ = try le(UInt64.self)
            case 0x2E: // STOP
                let v = try pop()
                guard marks.isEmpty else { throw fail("STOP with an open MARK") }
                return v
            case 0x28: // MARK
                guard marks.count < limits.maxPickleDepth else {
                    throw fail(limits.reason(.pickleDepth, found: "more than \(limits.maxPickleDepth) nested MARKs"))
                }
                marks.append(stack.count)
            case 0x30: _ = try pop() // POP
            case 0x31: _ = try popMark() // POP_MARK
            case 0x32: try push(try top()) // DUP

            case 0x7D: try push(try newObject(.dict(PickleDict()))) // EMPTY_DICT
            case 0x5D: try push(try newObject(.list([]))) // EMPTY_LIST
            case 0x29: try push(try newObject(.tuple([]))) // EMPTY_TUPLE
            case 0x8F: try push(try newObject(.set([]))) // EMPTY_SET
            case 0x74: try push(try newObject(.tuple(try popMark()))) // TUPLE
            case 0x85, 0x86, 0x87: // TUPLE1/2/3
                var items = [PickleValue]()
                for _ in 0..<Int(op - 0x84) { items.append(try pop()) }
                try push(try newObject(.tuple(items.reversed())))
            case 0x6C: try push(try newObject(.list(try popMark()))) // LIST
            case 0x64: // DICT
                let items = try popMark()
                guard items.count % 2 == 0 else { throw fail("odd number of items for a dict") }
                var d = PickleDict()
                for i in stride(from: 0, to: items.count, by: 2) { d.set(items[i], items[i + 1]) }
                try push(try newObject(.dict(d)))
            case 0x91: try push(try newObject(.set(try popMark()))) // FROZENSET
            case 0x61, 0x65: // APPEND, APPENDS
                let items = op == 0x61 ? [try pop()] : try popMark()
                try mutateTop(opName) { o in
                    if case var .record(r) = o, !r.isModuleClass { // a deque or list subclass: items kept as data
                        o = .list([]); r.items.append(contentsOf: items); o = .record(r); return true
                    }
                    guard case var .list(l) = o else { return false }
                    o = .list([]); l.append(contentsOf: items); o = .list(l); return true
                }
            case 0x90: // ADDITEMS
                let items = try popMark()
                try mutateTop(opName) { o in
                    guard case var .set(s) = o else { return false }
                    o = .set([]); s.append(contentsOf: items); o = .set(s); return true
                }
            case 0x73, 0x75: // SETITEM, SETITEMS
                var items: [PickleValue]
                if op == 0x73 { let v = try pop(); items = [try pop(), v] } else { items = try popMark() }
                guard items.count % 2 == 0 else { throw fail("odd number of items for SETITEMS") }
                try mutateTop(opName) { o in
                    if case var .record(r) = o, !r.isModuleClass { // a dict subclass (AttributeDict, defaultdict …)
                        o = .list([])
                        for i in stride(from: 0, to: items.count, by: 2) { r.entries.set(items[i], items[i + 1]) }
                        o = .record(r); return true
                    }
                    guard case var .dict(d) = o else { return false }
                    o = .list([])
                    for i in stride(from: 0, to: items.count, by: 2) { d.set(items[i], items[i + 1]) }
                    o = .dict(d); return true
                }

            case 0x4A: try push(.int(Int(try le(Int32.self)))) // BININT
            case 0x4B: try push(.int(Int(try u8()))) // BININT1
            case 0x4D: try push(.int(Int(try le(UInt16.self)))) // BININT2
            case 0x8A, 0x8B: // LONG1, LONG4
                let n = op == 0x8A ? Int(try u8()) : try length(Int32.self)
                guard n <= TorchLimits.maxLongBytes else {
                    throw fail("integer of \(n) bytes (limit \(TorchLimits.maxLongBytes))")
                }
                try push(Self.decodeLong(Array(try take(n))))
            case 0x49: // INT (text): also how protocol 0 writes bools
                let s = try line()
                if s == "00" { try push(.bool(false)) } else if s == "01" { try push(.bool(true)) } else {
                    guard let v = Int(s) else { throw fail("'\(s)' is not an integer") }
                    try push(.int(v))
                }
            case 0x4C: // LONG (text, protocol 0): digits with an optional trailing L
                var s = try line()
                if s.hasSuffix("L") { s.removeLast() }
                guard s.count <= 2 * TorchLimits.maxLongBytes, let v = Int(s) else { throw fail("'\(s)' is not an integer this reader accepts") }
                try push(.int(v))
            case 0x46: // FLOAT (text)
                let s = try line()
                guard let v = Double(s) else { throw fail("'\(s)' is not a float") }
                try push(.float(v))
            case 0x56: // UNICODE (text, raw-unicode-escape)
                try push(.string(try rawUnicodeEscape(try line())))
            case 0x53: // STRING (text): a quoted Python 2 string literal
                try push(.string(try quotedString(try line())))
            case 0x47: // BINFLOAT: big-endian double
                let raw = try take(8)
                var bits: UInt64 = 0
                for b in raw { bits = bits << 8 | UInt64(b) }
                try push(.float(Double(bitPattern: bits)))
            case 0x58: try push(.string(try utf8(try take(try length(UInt32.self))))) // BINUNICODE
            case 0x8C: try push(.string(try utf8(try take(Int(try u8()))))) // SHORT_BINUNICODE
            case 0x8D: try push(.string(try utf8(try take(try length(UInt64.self))))) // BINUNICODE8
            // Python 2 str: torch loads these with encoding='utf-8'.
            case 0x54: try push(.string(try utf8(try take(try length(Int32.self))))) // BINSTRING
            case 0x55: try push(.string(try utf8(try take(Int(try u8()))))) // SHORT_BINSTRING
            case 0x42: try push(.bytes(Array(try take(try length(UInt32.self))))) // BINBYTES
            case 0x43: try push(.bytes(Array(try take(Int(try u8()))))) // SHORT_BINBYTES
            case 0x8E: try push(.bytes(Array(try take(try length(UInt64.self))))) // BINBYTES8
            case 0x4E: try push(.none) // NONE
            case 0x88: try push(.bool(true)) // NEWTRUE
            case 0x89: try push(.bool(false)) // NEWFALSE

            case 0x71: try memoize(Int(try u8())) // BINPUT
            case 0x72: try memoize(Int(try le(UInt32.self))) // LONG_BINPUT
            case 0x94: try memoize(memo.count) // MEMOIZE
            case 0x70: // PUT (text)
                let s = try line()
                guard let i = Int(s), i >= 0 else { throw fail("memo index '\(s)' is not a non-negative integer") }
                try memoize(i)
            case 0x68: try push(try memoGet(Int(try u8()))) // BINGET
            case 0x6A: try push(try memoGet(Int(try le(UInt32.self)))) // LONG_BINGET
            case 0x67: // GET (text)
                let s = try line()
                guard let i = Int(s) else { throw fail("memo index '\(s)' is not an integer") }
                try push(try memoGet(i))

            case 0x63: // GLOBAL
                let module = try line()
                let name = try line()
                try push(.global(try resolve(module, name)))
            case 0x93: // STACK_GLOBAL
                let nameValue = try pop()
                let moduleValue = try pop()
                guard case let .string(module) = moduleValue, case let .string(name) = nameValue else {
                    throw fail("STACK_GLOBAL needs two strings, found \(arena.kindName(moduleValue)) and \(arena.kindName(nameValue))")
                }
                try push(.global(try resolve(module, name)))
            case 0x69: // INST: calls the class with the marked arguments
                let module = try line()
                let name = try line()
                let g = try resolve(module, name)
                let args = try popMark()
                try push(try call(g, args, how: "INST"))
            case 0x6F: // OBJ: like INST with the class on the stack
                let items = try popMark()
                guard case let .global(g)? = items.first else { throw fail("OBJ needs a class after its MARK") }
                try push(try call(g, Array(items.dropFirst()), how: "OBJ"))
            case 0x52: // REDUCE
                let args = try pop()
                let callable = try pop()
                guard case let .global(g) = callable else {
                    throw fail("REDUCE can only apply an allow-listed global, found \(arena.kindName(callable))")
                }
                guard case let .tuple(items)? = arena.object(args) else {
                    throw fail("REDUCE arguments must be a tuple, found \(arena.kindName(args))")
                }
                try push(try call(g, items, how: "REDUCE"))
            case 0x81, 0x92: // NEWOBJ, NEWOBJ_EX
                if op == 0x92 {
                    let kwargs = try pop()
                    guard let d = arena.dict(kwargs), d.keys.isEmpty else { throw fail("NEWOBJ_EX with keyword arguments is not supported") }
                }
                let args = try pop()
                let cls = try pop()
                guard case let .tuple(items)? = arena.object(args) else {
                    throw fail("\(opName) arguments must be a tuple, found \(arena.kindName(args))")
                }
                try push(try newInstance(cls, items))
            case 0x62: // BUILD
                let state = try pop()
                try build(try top(), state)
            case 0x51: // BINPERSID
                let pid = try pop()
                try push(try persistent(pid))
            case 0x50: // PERSID (text)
                try push(try persistent(.string(try line())))
            default:
                let printable = (0x21...0x7E).contains(op) ? " '\(Character(Unicode.Scalar(op)))'" : ""
                throw fail("pickle opcode 0x\(String(op, radix: 16, uppercase: true))\(printable) is not supported in checkpoints")
            }
        }
    }

    /// A persistent id names a storage: `('storage', storage class, key, location, count)`, and in
    /// legacy streams a sixth item, `None` or the view `(view key, offset, count)`. Legacy
    /// whole-module pickles also name classes as `('module', class, source file, source)`.
    private mutating func persistent(_ pid: PickleValue) throws -> PickleValue {
        guard let items = arena.sequence(pid), case let .string(tag)? = items.first else {
            throw fail("persistent id must be a tuple starting with a tag, found \(arena.kindName(pid))")
        }
        if tag == "module" && legacyPersistentIds && policy == .moduleRecords {
            guard items.count == 4, case .global(.moduleClass) = items[1] else {
                throw fail("legacy module id must be ('module', class, file, source)")
            }
            return items[1]
        }
        guard tag == "storage" else { throw fail("persistent id of kind '\(tag)' is not supported") }
        let expected = legacyPersistentIds ? 6 : 5
        guard items.count == expected else { throw fail("storage id has \(items.count) items, expected \(expected)") }
        guard case let .global(.storageType(dtype, _)) = items[1] else {
            throw fail("storage id names \(arena.kindName(items[1])) instead of a torch storage class")
        }
        guard case let .string(key) = items[2], !key.isEmpty, key.count <= 128,
              key.unicodeScalars.allSatisfy({ $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "_" || $0 == "-") }) else {
            throw fail("storage key must be a short alphanumeric string, found \(arena.kindName(items[2]))")
        }
        let count = try int(items[4], "storage element count")
        guard count >= 0 else { throw fail("storage '\(key)' declares \(count) elements") }
        var ref = TorchStorageRef(key: key, dtype: dtype, base: 0, count: count)
        if let seen = storages[key] {
            guard seen.dtype == dtype, seen.count == count else {
                throw fail("storage '\(key)' is declared as \(seen.count) × \(seen.dtype.rawValue) and as \(count) × \(dtype.rawValue)")
            }
        } else {
            storages[key] = ref
            storageOrder.append(key)
        }
        if legacyPersistentIds, let view = arena.sequence(items[5]) {
            guard view.count == 3 else { throw fail("storage view must be (key, offset, count)") }
            let offset = try int(view[1], "view offset")
            let viewCount = try int(view[2], "view element count")
            let (end, o) = offset.addingReportingOverflow(viewCount)
            guard offset >= 0, viewCount >= 0, !o, end <= count else {
                throw fail("view [\(offset), +\(viewCount)) lies outside storage '\(key)' of \(count) elements")
            }
            ref.base = offset
            ref.count = viewCount
        } else if legacyPersistentIds, case .none = items[5] {
        } else if legacyPersistentIds {
            throw fail("storage view metadata must be None or a tuple")
        }
        return try newObject(.storage(ref))
    }

    /// Python's raw-unicode-escape: only `\uXXXX` and `\UXXXXXXXX` are escapes.
    private func rawUnicodeEscape(_ s: String) throws -> String {
        var out = String.UnicodeScalarView()
        var it = Array(s.unicodeScalars)[...]
        while let c = it.popFirst() {
            if c == "\\", let k = it.first, k == "u" || k == "U" {
                let n = k == "u" ? 4 : 8
                let digits = String(String.UnicodeScalarView(it.dropFirst().prefix(n)))
                guard digits.count == n, let v = UInt32(digits, radix: 16), let u = Unicode.Scalar(v) else {
                    throw fail("bad \\\(k) escape in a text string")
                }
                out.append(u)
                it = it.dropFirst(n + 1)
            } else {
                out.append(c)
            }
        }
        return String(out)
    }

    /// A Python 2 `repr` string literal: quotes plus backslash escapes.
    private func quotedString(_ s: String) throws -> String {
        let chars = Array(s.unicodeScalars)
        guard chars.count >= 2, let q = chars.first, q == "'" || q == "\"", chars.last == q else {
            throw fail("text string is not quoted")
        }
        var bytes: [UInt8] = []
        var i = 1
        while i < chars.count - 1 {
            let c = chars[i]
            guard c.value < 256 else { throw fail("text string has a non-latin1 character") }
            if c != "\\" { bytes.append(UInt8(c.value)); i += 1; continue }
            guard i + 1 < chars.count - 1 else { throw fail("text string ends in a backslash") }
            let e = chars[i + 1]
            i += 2
            switch e {
            case "n": bytes.append(0x0A)
            case "r": bytes.append(0x0D)
            case "t": bytes.append(0x09)
            case "\\", "'", "\"": bytes.append(UInt8(e.value))
            case "x":
                guard i + 2 <= chars.count - 1, let v = UInt8(String(String.UnicodeScalarView(chars[i..<(i + 2)])), radix: 16) else {
                    throw fail("bad \\x escape in a text string")
                }
                bytes.append(v)
                i += 2
            default: throw fail("escape \\\(e) in a text string is not supported")
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    // MARK: globals

    /// Returns the allow-listed meaning of `module.name`, or refuses it.
    private func resolve(_ module: String, _ name: String) throws -> PickleGlobal {
        if Self.deniedReason(module, name) == nil, let g = Self.allowListed(module, name, policy: policy) { return g }
        throw refuse(module, name)
    }

    static func allowListed(_ module: String, _ name: String, policy: PicklePolicy) -> PickleGlobal? {
        switch (module, name) {
        case ("collections", "OrderedDict"): return .orderedDict
        case ("torch._utils", "_rebuild_tensor"): return .rebuildTensor
        case ("torch._utils", "_rebuild_tensor_v2"): return .rebuildTensorV2
        case ("torch._utils", "_rebuild_parameter"): return .rebuildParameter
        case ("torch._utils", "_rebuild_parameter_with_state"): return .rebuildParameterWithState
        case ("torch", "Size"): return .torchSize
        case ("torch", "device"): return .torchDevice
        case ("_codecs", "encode"): return .codecsEncode
        case ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"): return .numpyScalar
        case ("numpy", "dtype"): return .numpyDType
        case ("torch", _):
            if let dtype = storageDTypes[name] { return .storageType(dtype, name) }
        case ("copyreg", "_reconstructor"), ("copy_reg", "_reconstructor"): return .reconstructor
        case ("builtins", "object"), ("__builtin__", "object"): return .builtinObject
        case ("builtins", "set"), ("__builtin__", "set"): return .builtinSet
        case ("builtins", "frozenset"), ("__builtin__", "frozenset"): return .builtinFrozenset
        case ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"):
            return .numpyReconstruct("\(module).\(name)")
        default: break
        }
        let qualified = "\(module).\(name)"
        if recordClasses.contains(qualified) { return .recordClass(qualified) }
        if typeTokens.contains(qualified) { return .typeToken(qualified) }
        guard policy == .moduleRecords else { return nil }
        return isInertModuleClass(module, name) ? .moduleClass(qualified) : nil
    }

    /// Classes of plain data that training checkpoints carry beside the weights. Their instances
    /// become inert records: the arguments and state the pickle gives are kept as data and only
    /// ever listed as ignored. None of them holds weights.
    static let recordClasses: Set<String> = {
        var s: Set<String> = [
            "argparse.Namespace",
            "collections.Counter", "collections.defaultdict", "collections.deque",
            "datetime.datetime", "datetime.date", "datetime.time", "datetime.timedelta", "datetime.timezone",
            "numpy.ndarray", "numpy.ma.core.MaskedArray",
            "torch.torch_version.TorchVersion",
            "lightning.fabric.utilities.data.AttributeDict", "lightning_fabric.utilities.data.AttributeDict",
            "lightning.pytorch.utilities.parsing.AttributeDict", "pytorch_lightning.utilities.parsing.AttributeDict",
            "omegaconf.dictconfig.DictConfig", "omegaconf.listconfig.ListConfig",
            "omegaconf.base.Metadata", "omegaconf.base.ContainerMetadata",
        ]
        for m in ["pathlib", "pathlib._local"] {
            for c in ["PurePath", "PurePosixPath", "PureWindowsPath", "Path", "PosixPath", "WindowsPath"] { s.insert("\(m).\(c)") }
        }
        for c in ["AnyNode", "StringNode", "IntegerNode", "FloatNode", "BooleanNode", "BytesNode", "PathNode", "EnumNode", "ValueNode"] {
            s.insert("omegaconf.nodes.\(c)")
        }
        return s
    }()

    /// Builtin types named as data (a `defaultdict` factory, a `_reconstructor` base, an
    /// omegaconf element type). They are tokens: calling one is refused.
    static let typeTokens: Set<String> = {
        var s: Set<String> = ["typing.Any"]
        for m in ["builtins", "__builtin__"] {
            for t in ["dict", "list", "tuple", "str", "unicode", "int", "long", "float", "bool", "bytes", "complex", "type"] { s.insert("\(m).\(t)") }
        }
        return s
    }()

    /// Globals that exist only to run code, and why: refused by name (with the reason) before the
    /// allow-list is consulted. Anything else not allow-listed is refused as unknown.
    static func deniedReason(_ module: String, _ name: String) -> String? {
        let top = module.split(separator: ".", maxSplits: 1).first.map(String.init) ?? module
        switch top {
        case "dill":
            return "dill's loader helpers rebuild classes, functions and code objects from the file when called; "
                + "a model pickled with dill is only usable by running that code, and its forward code is not in the file, "
                + "so its structure cannot be known from it"
        case "copyreg", "copy_reg":
            // `_reconstructor(cls, base, state)` only allocates (see `call`); the rest of copyreg registers and calls reducers.
            return name == "_reconstructor" ? nil : "a pickle loader helper: it registers or calls object constructors"
        case "cloudpickle", "pickle", "_pickle", "cPickle", "joblib", "marshal", "shelve", "_compat_pickle":
            return "a pickle or marshal loader helper: it rebuilds objects, classes or code when called"
        case "os", "posix", "nt", "subprocess", "_posixsubprocess", "pty", "commands", "popen2", "spawn":
            return "it runs programs or changes files"
        case "sys", "importlib", "imp", "runpy", "pkgutil", "zipimport", "site":
            return "it imports or runs modules"
        case "shutil", "tempfile", "io", "_io", "fileinput", "glob":
            return "it opens, moves or deletes files"
        case "socket", "_socket", "ssl", "http", "urllib", "urllib2", "urllib3", "requests", "ftplib", "smtplib",
             "telnetlib", "webbrowser", "xmlrpc", "socketserver":
            return "it opens network connections or a browser"
        case "ctypes", "_ctypes", "cffi":
            return "it calls native code"
        case "types", "code", "codeop", "compileall", "py_compile", "ast":
            return "it builds or compiles code objects and functions"
        case "functools", "operator", "_operator":
            return "it exists to call other objects"
        case "pdb", "bdb", "trace", "timeit", "profile", "cProfile", "multiprocessing", "threading", "_thread",
             "signal", "asyncio", "concurrent":
            return "it runs code"
        case "builtins", "__builtin__":
            let code: Set<String> = ["eval", "exec", "execfile", "compile", "getattr", "setattr", "delattr", "__import__",
                                     "open", "file", "input", "raw_input", "breakpoint", "globals", "locals", "vars",
                                     "apply", "reload", "exit", "quit", "help", "memoryview", "classmethod", "staticmethod",
                                     "property", "super", "map", "filter"]
            return code.contains(name) ? "it evaluates code, opens files or reaches arbitrary attributes" : nil
        case "torch":
            if module == "torch" && ["load", "save"].contains(name) { return "it loads or writes further pickles" }
            for m in ["torch.serialization", "torch.storage", "torch.hub", "torch.jit", "torch.package", "torch._C",
                      "torch.ops", "torch._ops", "torch.utils.cpp_extension", "torch.multiprocessing"]
            where module == m || module.hasPrefix(m + ".") {
                return "it loads further pickles, native code or scripted code"
            }
            return nil
        case "numpy":
            if module.hasPrefix("numpy.testing") { return "numpy's test helpers evaluate code strings" }
            if name == "load" || name == "loads" || module.hasPrefix("numpy.f2py") || module.hasPrefix("numpy.distutils")
                || module.hasPrefix("numpy.lib.npyio") || module.hasPrefix("numpy.lib.format") {
                return "it loads further pickles or builds native code"
            }
            return nil
        default:
            return nil
        }
    }

    /// Storage class names in persistent ids, and the element type each stands for.
    static let storageDTypes: [String: DType] = [
        "FloatStorage": .float32, "HalfStorage": .float16, "BFloat16Storage": .bfloat16,
        "DoubleStorage": .float64, "LongStorage": .int64, "IntStorage": .int32,
        "ByteStorage": .uint8, "BoolStorage": .bool, "UntypedStorage": .uint8,
    ]

    /// Module paths under which any CapWords class is taken as a module class.
    static let moduleClassPrefixes = ["torch.nn.", "torchvision.models.", "timm.models.", "timm.layers."]

    /// Top-level packages whose classes are never taken as module classes: the standard library
    /// (os, subprocess, builtins …) and the frameworks' own non-module code. Refusing them at the
    /// GLOBAL opcode keeps a hostile `subprocess.Popen` from even becoming an inert token.
    static let refusedTopLevels: Set<String> = [
        "__builtin__", "builtins", "os", "posix", "nt", "posixpath", "ntpath", "subprocess", "sys", "shutil",
        "socket", "socketserver", "ssl", "select", "selectors", "signal", "importlib", "imp", "pkgutil", "runpy",
        "zipimport", "pickle", "_pickle", "cPickle", "pickletools", "copyreg", "copy_reg", "marshal", "shelve",
        "dbm", "codecs", "_codecs", "io", "_io", "tempfile", "pathlib", "glob", "fileinput", "ctypes", "_ctypes",
        "cffi", "types", "functools", "operator", "_operator", "itertools", "code", "codeop", "compileall",
        "py_compile", "inspect", "ast", "dis", "gc", "weakref", "threading", "_thread", "thread", "multiprocessing",
        "concurrent", "asyncio", "pty", "tty", "termios", "fcntl", "resource", "pwd", "grp", "platform",
        "sysconfig", "site", "webbrowser", "http", "urllib", "urllib2", "urllib3", "ftplib", "smtplib", "poplib",
        "imaplib", "telnetlib", "xmlrpc", "email", "logging", "pdb", "bdb", "trace", "timeit", "profile",
        "cProfile", "unittest", "doctest", "distutils", "setuptools", "pip", "venv", "zipfile", "tarfile", "gzip",
        "bz2", "lzma", "zlib", "base64", "binascii", "json", "csv", "sqlite3", "xml", "html", "string", "re",
        "random", "secrets", "hashlib", "hmac", "uuid", "time", "datetime", "calendar", "locale", "gettext",
        "argparse", "getopt", "getpass", "curses", "readline", "rlcompleter", "atexit", "traceback", "warnings",
        "contextlib", "abc", "enum", "numbers", "decimal", "fractions", "math", "cmath", "statistics", "array",
        "struct", "collections", "heapq", "bisect", "queue", "sched", "mmap", "typing", "dataclasses", "copy",
        "torch", "torchvision", "timm", "numpy", "scipy", "pandas", "dill", "cloudpickle", "joblib", "yaml",
        "requests", "IPython", "jinja2", "sympy",
    ]

    /// Whether `module.name` may be decoded as an inert module class (``PicklePolicy/moduleRecords``).
    ///
    /// Names are only recognised, never looked up: a class name (CapWords identifier) in
    /// `torch.nn.*` / `torchvision.models.*` / `timm.models.*`, or in a user's own module
    /// (`__main__.Net`, `models.resnet.BasicBlock`) outside the refused packages above.
    /// Functions such as `posix.system` or `builtins.eval` never qualify.
    static func isInertModuleClass(_ module: String, _ name: String) -> Bool {
        func isIdentifier<S: StringProtocol>(_ s: S) -> Bool {
            guard let first = s.unicodeScalars.first, first == "_" || (first.isASCII && first.properties.isAlphabetic) else { return false }
            return s.unicodeScalars.allSatisfy { $0 == "_" || ($0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0))) }
        }
        guard name.count <= 200, module.count <= 500, isIdentifier(name),
              let first = name.unicodeScalars.first, ("A"..."Z").contains(first) else { return false }
        let parts = module.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.allSatisfy({ isIdentifier($0) }) else { return false }
        if moduleClassPrefixes.contains(where: { module.hasPrefix($0) }) { return true }
        return !refusedTopLevels.contains(String(parts[0]))
    }

    // MARK: interpreting allow-listed globals

    /// What REDUCE / INST / OBJ would compute by calling `g(*args)`, computed here from data.
    private mutating func call(_ g: PickleGlobal, _ args: [PickleValue], how: String) throws -> PickleValue {
        switch g {
        case .orderedDict:
            var d = PickleDict()
            if let first = args.first {
                guard args.count == 1, let pairs = arena.sequence(first) else {
                    throw fail("OrderedDict(...) takes one sequence of pairs")
                }
                for p in pairs {
                    guard let kv = arena.sequence(p), kv.count == 2 else { throw fail("OrderedDict item is not a pair") }
                    d.set(kv[0], kv[1])
                }
            }
            return try newObject(.dict(d))
        case .rebuildTensor, .rebuildTensorV2:
            return try newObject(.tensor(try rebuildTensor(args, v2: g == .rebuildTensorV2)))
        case .rebuildParameter, .rebuildParameterWithState:
            let n = g == .rebuildParameter ? 3 : 4
            guard args.count == n, arena.tensor(args[0]) != nil else {
                throw fail("\(g.qualifiedName) expects \(n) arguments starting with a tensor")
            }
            return args[0]
        case .torchSize:
            guard args.count == 1, let dims = arena.sequence(args[0]) else { throw fail("torch.Size expects one tuple") }
            for d in dims { _ = try int(d, "torch.Size dimension") }
            return try newObject(.tuple(dims))
        case .torchDevice:
            guard let first = args.first, case let .string(s) = first, args.count <= 2 else {
                throw fail("torch.device expects a device string")
            }
            return .string(s)
        case .codecsEncode:
            guard args.count == 2, case let .string(s) = args[0], case let .string(encoding) = args[1] else {
                throw fail("_codecs.encode expects (str, encoding)")
            }
            switch encoding.lowercased() {
            case "latin1", "latin-1", "iso-8859-1", "iso8859-1":
                var out = [UInt8]()
                out.reserveCapacity(s.unicodeScalars.count)
                for u in s.unicodeScalars {
                    guard u.value < 256 else { throw fail("character U+\(String(u.value, radix: 16)) cannot be encoded as latin1") }
                    out.append(UInt8(u.value))
                }
                return .bytes(out)
            case "utf-8", "utf8":
                return .bytes(Array(s.utf8))
            default:
                throw fail("_codecs.encode with encoding '\(encoding)' is not supported")
            }
        case .numpyDType:
            guard args.count >= 1, case let .string(code) = args[0], code.count <= 8,
                  code.unicodeScalars.allSatisfy({ $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0)) }) else {
                throw fail("numpy.dtype expects a short type code")
            }
            return try newObject(.numpyDType(code: code, byteOrder: "|"))
        case .numpyScalar:
            guard args.count == 2, case let .numpyDType(code, order)? = arena.object(args[0]), case let .bytes(raw) = args[1] else {
                throw fail("numpy scalar expects (dtype, bytes)")
            }
            return Self.numpyScalar(code: code, byteOrder: order, raw)
        case .builtinSet, .builtinFrozenset:
            guard args.count <= 1 else { throw fail("\(g.qualifiedName) takes at most one argument") }
            if let first = args.first {
                switch arena.object(first) {
                case let .list(items)?, let .tuple(items)?, let .set(items)?: return try newObject(.set(items))
                default: throw fail("\(g.qualifiedName) argument must be a list, tuple or set")
                }
            }
            return try newObject(.set([]))
        case .reconstructor:
            // copyreg._reconstructor(cls, object, None) is object.__new__(cls): no constructor runs.
            // With a builtin base (dict, list …) the third item is the base's value: kept as data.
            guard args.count == 3 else { throw fail("copyreg._reconstructor expects (class, base, state)") }
            switch (args[0], args[1], args[2]) {
            case let (.global(.moduleClass(name)), .global(.builtinObject), .none):
                return try newRecord(name, module: true)
            case let (.global(.recordClass(name)), .global(.builtinObject), .none):
                return try newRecord(name, module: false)
            case let (.global(.recordClass(name)), .global(.typeToken), state):
                return try newRecord(name, module: false, arguments: [state])
            default:
                throw fail("copyreg._reconstructor is accepted only as (module class, object, None) or (data class, builtin type, value)")
            }
        case let .recordClass(name):
            // Recorded, not called: the arguments stay data.
            return try newRecord(name, module: false, arguments: args)
        case let .numpyReconstruct(name):
            // numpy.ndarray.__reduce__: `_reconstruct(cls, shape, dtype)` then BUILD with the array's state.
            guard args.count == 3, case let .global(cls) = args[0] else { throw fail("\(name) expects (class, shape, dtype)") }
            return try newRecord(cls.qualifiedName, module: false, arguments: Array(args.dropFirst()))
        case let .moduleClass(name) where how == "REDUCE" && Self.isEnumMemberReduce(name, args):
            // Enum.__reduce_ex__ is `(cls, (value,))`: a member named by its value. Recorded, not looked up.
            return try newRecord(name, module: false, arguments: args)
        case .storageType, .moduleClass, .builtinObject, .typeToken:
            throw fail("\(how) would call '\(g.qualifiedName)' and construct it by running its code; refused (nothing was executed)")
        }
    }

    /// NEWOBJ: `cls.__new__(cls, *args)`, which allocates without running `__init__`.
    private mutating func newInstance(_ cls: PickleValue, _ args: [PickleValue]) throws -> PickleValue {
        guard case let .global(g) = cls else { throw fail("\(opName) needs a class, found \(arena.kindName(cls))") }
        switch g {
        case let .moduleClass(name):
            guard args.isEmpty else { throw fail("\(opName) of module class '\(name)' with arguments is not supported") }
            return try newRecord(name, module: true)
        case let .recordClass(name):
            return try newRecord(name, module: false, arguments: args)
        case .orderedDict:
            return try newObject(.dict(PickleDict()))
        case .builtinSet, .builtinFrozenset:
            return try newObject(.set([]))
        default:
            throw fail("\(opName) of '\(g.qualifiedName)' is refused (nothing was executed)")
        }
    }

    private mutating func newRecord(_ name: String, module: Bool, arguments: [PickleValue] = []) throws -> PickleValue {
        if module {
            if seenRecordClasses.insert(name).inserted { recordClasses.append(name) }
        } else if seenDataRecordClasses.insert(name).inserted {
            dataRecordClasses.append(name)
        }
        return try newObject(.record(ModuleRecord(className: name, state: nil, arguments: arguments, isModuleClass: module)))
    }

    /// REDUCE of a user's class with one scalar argument is how an enum member pickles. Classes
    /// under the framework module paths are modules, never enums.
    static func isEnumMemberReduce(_ name: String, _ args: [PickleValue]) -> Bool {
        guard args.count == 1, !moduleClassPrefixes.contains(where: { name.hasPrefix($0) }) else { return false }
        switch args[0] {
        case .int, .string, .float, .bool, .none: return true
        default: return false
        }
    }

    /// BUILD: sets state on an object without calling `__setstate__`.
    private mutating func build(_ target: PickleValue, _ state: PickleValue) throws {
        guard case let .object(i) = target else { throw fail("BUILD needs an object, found \(target.kindName)") }
        switch arena.objects[i] {
        case var .dict(d):
            // OrderedDict's instance attributes, e.g. a state dict's `_metadata`.
            d.attributes = state
            arena.objects[i] = .dict(d)
        case var .record(r):
            r.state = state
            arena.objects[i] = .record(r)
        case let .numpyDType(code, _):
            // numpy's dtype state: (version, byte order, …).
            guard let items = arena.sequence(state), items.count >= 2, case let .string(order) = items[1],
                  ["<", ">", "|", "="].contains(order) else {
                throw fail("numpy dtype state is not (version, byteorder, …)")
            }
            arena.objects[i] = .numpyDType(code: code, byteOrder: order)
        case .tensor:
            break // Python attributes of a tensor subclass: not weights.
        default:
            throw fail("BUILD on a \(arena.objects[i].kindName) is not supported")
        }
    }

    // MARK: tensors

    /// `_rebuild_tensor(storage, offset, size, stride)` and
    /// `_rebuild_tensor_v2(storage, offset, size, stride, requires_grad, backward_hooks[, metadata])`.
    private func rebuildTensor(_ args: [PickleValue], v2: Bool) throws -> TorchTensorRef {
        let name = v2 ? "_rebuild_tensor_v2" : "_rebuild_tensor"
        guard v2 ? (args.count == 6 || args.count == 7) : args.count == 4 else {
            throw fail("\(name) expects \(v2 ? "6 or 7" : "4") arguments, found \(args.count)")
        }
        guard case let .storage(storage)? = arena.object(args[0]) else {
            throw fail("\(name): first argument must be a storage, found \(arena.kindName(args[0]))")
        }
        let offset = try int(args[1], "storage offset")
        guard let sizeItems = arena.sequence(args[2]), let strideItems = arena.sequence(args[3]) else {
            throw fail("\(name): size and stride must be tuples")
        }
        let shape = try sizeItems.map { try int($0, "size") }
        let strides = try strideItems.map { try int($0, "stride") }
        if v2, args.count == 7, let meta = arena.dict(args[6]) {
            for v in meta.values { if case .bool(true) = v { throw fail("tensors with conj/neg metadata bits are not supported") } }
        }
        let where_ = "tensor on storage '\(storage.key)' (shape \(shape), stride \(strides), offset \(offset))"
        guard shape.count == strides.count else { throw fail("\(where_): size and stride have different ranks") }
        guard shape.count <= TorchLimits.maxRank else { throw fail("\(where_): rank above \(TorchLimits.maxRank)") }
        guard offset >= 0, shape.allSatisfy({ $0 >= 0 }), strides.allSatisfy({ $0 >= 0 }) else {
            throw fail("\(where_): negative offset, size or stride")
        }
        var count = 1
        for d in shape {
            let (c, o) = count.multipliedReportingOverflow(by: d)
            guard !o else { throw fail("\(where_): element count overflows") }
            guard ReadLimits.float32Bytes(c) <= limits.maxTensorBytes else {
                throw fail(limits.reason(.tensorBytes, found: "\(where_) needs at least \(ReadLimits.float32Bytes(c)) bytes as float32"))
            }
            count = c
        }
        if count > 0 {
            var last = offset
            for (d, s) in zip(shape, strides) {
                let (span, o1) = (d - 1).multipliedReportingOverflow(by: s)
                let (sum, o2) = last.addingReportingOverflow(span)
                guard !o1, !o2 else { throw fail("\(where_): element index overflows") }
                last = sum
            }
            guard last < storage.count else {
                throw fail("\(where_): reaches element \(last) but the storage has \(storage.count) elements")
            }
        }
        return TorchTensorRef(storage: storage, offset: offset, shape: shape, strides: strides)
    }

    // MARK: helpers

    /// LONG1 / LONG4 payload: little-endian two's complement.
    static func decodeLong(_ raw: [UInt8]) -> PickleValue {
        if raw.isEmpty { return .int(0) }
        let negative = raw.last! & 0x80 != 0
        let fill: UInt8 = negative ? 0xFF : 0
        if raw.count > 8 && !(raw[8...].allSatisfy { $0 == fill } && (raw[7] & 0x80 != 0) == negative) {
            return .bigInt(raw)
        }
        var v: UInt64 = negative ? ~0 : 0
        for (i, b) in raw.prefix(8).enumerated() {
            v &= ~(UInt64(0xFF) << (8 * i))
            v |= UInt64(b) << (8 * i)
        }
        return .int(Int(Int64(bitPattern: v)))
    }

    /// A numpy scalar (e.g. a `best_acc` value) from its dtype code and raw bytes.
    static func numpyScalar(code: String, byteOrder: String, _ raw: [UInt8]) -> PickleValue {
        let bytes = byteOrder == ">" ? Array(raw.reversed()) : raw
        func bits() -> UInt64 { bytes.enumerated().reduce(0) { $0 | UInt64($1.element) << (8 * $1.offset) } }
        switch (code, bytes.count) {
        case ("f8", 8): return .float(Double(bitPattern: bits()))
        case ("f4", 4): return .float(Double(Float(bitPattern: UInt32(bits()))))
        case ("f2", 2): return .float(Double(halfToFloat(UInt16(bits()))))
        case ("i8", 8): return .int(Int(Int64(bitPattern: bits())))
        case ("i4", 4): return .int(Int(Int32(bitPattern: UInt32(bits()))))
        case ("i2", 2): return .int(Int(Int16(bitPattern: UInt16(bits()))))
        case ("i1", 1): return .int(Int(Int8(bitPattern: bytes[0])))
        case ("u8", 8) where bits() <= UInt64(Int.max): return .int(Int(bits()))
        case ("u4", 4), ("u2", 2), ("u1", 1): return .int(Int(bits()))
        case ("b1", 1): return .bool(bytes[0] != 0)
        default: return .bytes(raw) // an unusual scalar: kept as bytes, only ever listed as ignored
        }
    }

    static func name(of op: UInt8) -> String {
        switch op {
        case 0x80: return "PROTO"
        case 0x95: return "FRAME"
        case 0x2E: return "STOP"
        case 0x28: return "MARK"
        case 0x30: return "POP"
        case 0x31: return "POP_MARK"
        case 0x32: return "DUP"
        case 0x7D: return "EMPTY_DICT"
        case 0x5D: return "EMPTY_LIST"
        case 0x29: return "EMPTY_TUPLE"
        case 0x8F: return "EMPTY_SET"
        case 0x74: return "TUPLE"
        case 0x85: return "TUPLE1"
        case 0x86: return "TUPLE2"
        case 0x87: return "TUPLE3"
        case 0x6C: return "LIST"
        case 0x64: return "DICT"
        case 0x91: return "FROZENSET"
        case 0x61: return "APPEND"
        case 0x65: return "APPENDS"
        case 0x90: return "ADDITEMS"
        case 0x73: return "SETITEM"
        case 0x75: return "SETITEMS"
        case 0x4A: return "BININT"
        case 0x4B: return "BININT1"
        case 0x4D: return "BININT2"
        case 0x8A: return "LONG1"
        case 0x8B: return "LONG4"
        case 0x49: return "INT"
        case 0x47: return "BINFLOAT"
        case 0x58: return "BINUNICODE"
        case 0x8C: return "SHORT_BINUNICODE"
        case 0x8D: return "BINUNICODE8"
        case 0x54: return "BINSTRING"
        case 0x55: return "SHORT_BINSTRING"
        case 0x42: return "BINBYTES"
        case 0x43: return "SHORT_BINBYTES"
        case 0x8E: return "BINBYTES8"
        case 0x4E: return "NONE"
        case 0x88: return "NEWTRUE"
        case 0x89: return "NEWFALSE"
        case 0x71: return "BINPUT"
        case 0x72: return "LONG_BINPUT"
        case 0x94: return "MEMOIZE"
        case 0x70: return "PUT"
        case 0x68: return "BINGET"
        case 0x6A: return "LONG_BINGET"
        case 0x67: return "GET"
        case 0x63: return "GLOBAL"
        case 0x93: return "STACK_GLOBAL"
        case 0x69: return "INST"
        case 0x6F: return "OBJ"
        case 0x52: return "REDUCE"
        case 0x81: return "NEWOBJ"
        case 0x92: return "NEWOBJ_EX"
        case 0x62: return "BUILD"
        case 0x51: return "BINPERSID"
        case 0x50: return "PERSID"
        case 0x53: return "STRING"
        case 0x56: return "UNICODE"
        case 0x46: return "FLOAT"
        case 0x4C: return "LONG"
        case 0x96: return "BYTEARRAY8"
        case 0x97: return "NEXT_BUFFER"
        case 0x98: return "READONLY_BUFFER"
        default: return ""
        }
    }
}

/// IEEE 754 binary16 → binary32, exact for every input (subnormals, infinities, NaN).
func halfToFloat(_ h: UInt16) -> Float {
    let sign = UInt32(h & 0x8000) << 16
    let exponent = Int((h >> 10) & 0x1F)
    var mantissa = UInt32(h & 0x3FF)
    if exponent == 0x1F { return Float(bitPattern: sign | 0x7F80_0000 | (mantissa << 13)) }
    if exponent == 0 {
        if mantissa == 0 { return Float(bitPattern: sign) }
        // Subnormal: normalise the mantissa.
        var e = -14
        while mantissa & 0x400 == 0 { mantissa <<= 1; e -= 1 }
        mantissa &= 0x3FF
        return Float(bitPattern: sign | UInt32(e + 127) << 23 | (mantissa << 13))
    }
    return Float(bitPattern: sign | UInt32(exponent - 15 + 127) << 23 | (mantissa << 13))
}
