/// A value the restricted pickle machine produces.
///
/// Containers live in ``PickleArena`` and are named by index, so values never own one another:
/// a hostile pickle can build cycles (a list appended to itself through the memo) or chains
/// millions deep without making deallocation recurse or memory leak. Walks over decoded data
/// are bounded by ``ReadLimits/maxPickleDepth`` instead.
enum PickleValue: Sendable {
    case none
    case bool(Bool)
    case int(Int)
    /// An integer wider than 64 bits, as little-endian two's-complement bytes (e.g. the legacy magic number).
    case bigInt([UInt8])
    case float(Double)
    case string(String)
    case bytes([UInt8])
    /// A container or decoded object: an index into ``PickleArena/objects``.
    case object(Int)
    /// An allow-listed global. It is a token the machine interprets, never something it calls.
    case global(PickleGlobal)

    var kindName: String {
        switch self {
        case .none: return "None"
        case .bool: return "bool"
        case .int, .bigInt: return "int"
        case .float: return "float"
        case .string: return "str"
        case .bytes: return "bytes"
        case .object: return "object"
        case let .global(g): return "global \(g.qualifiedName)"
        }
    }
}

/// The globals a checkpoint may name. Anything else is refused at the GLOBAL / STACK_GLOBAL /
/// INST opcode that names it, before any later opcode could use it.
enum PickleGlobal: Sendable, Equatable {
    case orderedDict
    case rebuildTensor
    case rebuildTensorV2
    case rebuildParameter
    case rebuildParameterWithState
    /// A typed storage class (`torch.FloatStorage` …) or `torch.UntypedStorage`: only ever a dtype
    /// tag inside a persistent id; calling it is refused.
    case storageType(DType, String)
    case torchSize
    case codecsEncode
    case numpyScalar
    case numpyDType
    case torchDevice
    // Module-record mode only (see `PicklePolicy.moduleRecords`).
    case reconstructor
    case builtinObject
    case builtinSet
    case builtinFrozenset
    /// A module class seen in a whole pickled `nn.Module`; instances become inert ``ModuleRecord``s.
    case moduleClass(String)
    /// A class of plain data (`argparse.Namespace`, `collections.Counter`, `datetime.date` …):
    /// REDUCE / NEWOBJ / INST / OBJ of it make an inert record holding the arguments as data.
    case recordClass(String)
    /// `numpy.core.multiarray._reconstruct(cls, shape, dtype)`: makes an inert array record.
    case numpyReconstruct(String)
    /// A builtin type (`builtins.dict`, `typing.Any` …) named as data, e.g. a `defaultdict`
    /// factory or the base in `copyreg._reconstructor`; calling it is refused.
    case typeToken(String)

    var qualifiedName: String {
        switch self {
        case .orderedDict: return "collections.OrderedDict"
        case .rebuildTensor: return "torch._utils._rebuild_tensor"
        case .rebuildTensorV2: return "torch._utils._rebuild_tensor_v2"
        case .rebuildParameter: return "torch._utils._rebuild_parameter"
        case .rebuildParameterWithState: return "torch._utils._rebuild_parameter_with_state"
        case let .storageType(_, name): return "torch.\(name)"
        case .torchSize: return "torch.Size"
        case .codecsEncode: return "_codecs.encode"
        case .numpyScalar: return "numpy.core.multiarray.scalar"
        case .numpyDType: return "numpy.dtype"
        case .torchDevice: return "torch.device"
        case .reconstructor: return "copyreg._reconstructor"
        case .builtinObject: return "builtins.object"
        case .builtinSet: return "builtins.set"
        case .builtinFrozenset: return "builtins.frozenset"
        case let .moduleClass(name), let .recordClass(name), let .numpyReconstruct(name), let .typeToken(name): return name
        }
    }
}

/// How much the machine accepts beyond plain state dicts.
enum PicklePolicy: Sendable {
    /// Only the data globals of a state dict checkpoint.
    case stateDict
    /// Also whole pickled `nn.Module`s: module classes become inert records (class name + the
    /// dict BUILD gave them), created only through NEWOBJ with no arguments or
    /// `copyreg._reconstructor(cls, object, None)` — the two ways pickle makes an instance
    /// *without* calling its constructor. Calling such a class (REDUCE, INST, OBJ) stays refused.
    case moduleRecords
}

/// A storage named by a persistent id: which bytes a tensor reads, not the bytes themselves.
struct TorchStorageRef: Sendable {
    /// `data/<key>` in a zip, or the key in the legacy stream's storage list.
    var key: String
    var dtype: DType
    /// First element of this storage inside the stored one (legacy views), in elements.
    var base: Int
    /// Elements this storage declares.
    var count: Int
}

/// A tensor as `_rebuild_tensor` describes it: a strided view of a storage. Bounds against
/// `storage.count` are checked when the view is created.
struct TorchTensorRef: Sendable {
    var storage: TorchStorageRef
    var offset: Int
    var shape: [Int]
    var strides: [Int]
}

/// An instance of a class the machine never calls: a module class in a whole pickled
/// `nn.Module`, or a data class (``PickleGlobal/recordClass(_:)``). Data only.
struct ModuleRecord: Sendable {
    var className: String
    /// What BUILD set: for `nn.Module` the instance `__dict__` (`_parameters`, `_buffers`, `_modules` …).
    var state: PickleValue?
    /// The arguments the pickle would have passed to the class (REDUCE, NEWOBJ, INST, OBJ), kept as data.
    var arguments: [PickleValue] = []
    /// Items APPEND(S) added (a `deque`) and pairs SETITEM(S) set (a dict subclass such as `AttributeDict`).
    var items: [PickleValue] = []
    var entries = PickleDict()
    /// Whether the class was taken as an `nn.Module` class (a module path or a user's own class).
    var isModuleClass: Bool
}

/// A dict in insertion order (Python dicts and `OrderedDict` keep it; state dict order matters).
struct PickleDict: Sendable {
    var keys: [PickleValue] = []
    var values: [PickleValue] = []
    /// Lets a repeated string or int key replace its value, as in Python.
    var index: [PickleKey: Int] = [:]
    /// Attributes BUILD set on an `OrderedDict` (torch stores the state dict's `_metadata` there).
    var attributes: PickleValue?

    mutating func set(_ key: PickleValue, _ value: PickleValue) {
        if let k = PickleKey(key) {
            if let i = index[k] { values[i] = value; return }
            index[k] = keys.count
        }
        keys.append(key)
        values.append(value)
    }

    func value(forString key: String) -> PickleValue? {
        index[.string(key)].map { values[$0] }
    }
}

/// The dict keys that can be compared without walking containers.
enum PickleKey: Hashable, Sendable {
    case string(String)
    case int(Int)

    init?(_ v: PickleValue) {
        switch v {
        case let .string(s): self = .string(s)
        case let .int(i): self = .int(i)
        case let .bool(b): self = .int(b ? 1 : 0)
        default: return nil
        }
    }
}

/// Everything a pickle built that is not a scalar.
enum PickleObject: Sendable {
    case tuple([PickleValue])
    case list([PickleValue])
    case dict(PickleDict)
    case set([PickleValue])
    case storage(TorchStorageRef)
    case tensor(TorchTensorRef)
    case record(ModuleRecord)
    /// A numpy dtype: type code (`f8`, `i4` …) and byte order (`<`, `>`, `|`, `=`).
    case numpyDType(code: String, byteOrder: String)

    var kindName: String {
        switch self {
        case .tuple: return "tuple"
        case .list: return "list"
        case .dict: return "dict"
        case .set: return "set"
        case .storage: return "storage"
        case .tensor: return "tensor"
        case let .record(r): return r.isModuleClass ? "object of class \(r.className)" : r.className
        case .numpyDType: return "numpy dtype"
        }
    }
}

/// The objects of one pickle.
struct PickleArena: Sendable {
    var objects: [PickleObject] = []

    func object(_ v: PickleValue) -> PickleObject? {
        if case let .object(i) = v { return objects[i] }
        return nil
    }

    func dict(_ v: PickleValue) -> PickleDict? {
        if case let .dict(d)? = object(v) { return d }
        return nil
    }

    func tensor(_ v: PickleValue) -> TorchTensorRef? {
        if case let .tensor(t)? = object(v) { return t }
        return nil
    }

    func record(_ v: PickleValue) -> ModuleRecord? {
        if case let .record(r)? = object(v) { return r }
        return nil
    }

    /// A record whose attribute dict has `_parameters` and `_modules`: an `nn.Module`.
    func module(_ v: PickleValue) -> ModuleRecord? {
        guard let r = record(v), let state = r.state, let d = dict(state),
              d.value(forString: "_parameters") != nil, d.value(forString: "_modules") != nil else { return nil }
        return r
    }

    /// Items of a tuple or list.
    func sequence(_ v: PickleValue) -> [PickleValue]? {
        switch object(v) {
        case let .tuple(items)?, let .list(items)?: return items
        default: return nil
        }
    }

    func kindName(_ v: PickleValue) -> String {
        if case let .object(i) = v { return objects[i].kindName }
        return v.kindName
    }
}
