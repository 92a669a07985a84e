/// A rule of the forward pass that a spec breaks whatever the input: where in the spec, which op,
/// and why.
public struct SpecViolation: Error, Sendable, Equatable, CustomStringConvertible {
    /// JSON path of the offending field or op, e.g. `stem[3].stride`, `stages[0].blocks[1]`.
    public var path: String
    /// The op or block there, e.g. `max_pool`, `conv 'layer1.0.conv1'`, `block 'layer1.0'`.
    public var subject: String
    public var reason: String

    public var description: String { "\(path) (\(subject)): \(reason)" }
}

extension ResNetSpec {
    /// The first rule the forward pass relies on that this spec breaks at every input size, or nil.
    ///
    /// The forward pass (``forward(_:input:engine:capture:)`` and ``ForwardPlan``) checks each op against
    /// the activation it receives. Everything that does not depend on the input's height and width
    /// is checked here, in one walk over the spec: the numbers of every op (window sizes, strides,
    /// channels, groups, paddings, epsilon) in the ranges the forward pass accepts; the rank of the
    /// activation (an op that needs (N, C, H, W) after a flatten or global pooling, a dense layer or
    /// softmax before one); channel counts from op to op and across the two branches of a block.
    /// The `.rnw` reader refuses a file whose spec breaks one, and the forward pass runs this before
    /// anything else, so the two cannot disagree. Sizes that depend on the input (a window larger
    /// than the padded input, `same` padding, features after a flatten) are still checked per run.
    public func structuralViolation() -> SpecViolation? {
        let walker = SpecRuleWalker()
        do {
            guard inputChannels >= 1, inputChannels <= ForwardRunner.maxChannels else {
                throw SpecViolation(path: "inputChannels", subject: "spec",
                                    reason: "is \(inputChannels), must be in 1...\(ForwardRunner.maxChannels)")
            }
            var x = SpecRuleWalker.Activation.spatial(channels: inputChannels)
            x = try walker.ops(stem, x, path: "stem")
            for (s, stage) in stages.enumerated() {
                for (b, block) in stage.blocks.enumerated() {
                    x = try walker.block(block, x, path: "stages[\(s)].blocks[\(b)]")
                }
            }
            _ = try walker.ops(head, x, path: "head")
            return nil
        } catch let v as SpecViolation {
            return v
        } catch {
            return SpecViolation(path: "spec", subject: "spec", reason: "\(error)")
        }
    }
}

/// The walk behind ``ResNetSpec/structuralViolation()``: the activation's rank and channels, op by op.
struct SpecRuleWalker {
    enum Activation: Equatable {
        /// (N, C, H, W).
        case spatial(channels: Int)
        /// (N, F); `features` is nil after flattening a spatial map (it depends on the input size).
        /// `since` names the op that made it flat, for messages.
        case flat(features: Int?, since: String)
    }

    static func kind(_ op: Op) -> String {
        switch op {
        case let .conv(c): return "conv '\(c.name)'"
        case let .batchNorm(b): return "batch_norm '\(b.name)'"
        case let .dense(d): return "dense '\(d.name)'"
        case .relu: return "relu"
        case .maxPool: return "max_pool"
        case .avgPool: return "avg_pool"
        case .zeroPad: return "zero_pad"
        case .subsample: return "subsample"
        case .channelPad: return "channel_pad"
        case .globalAvgPool: return "global_avg_pool"
        case .flatten: return "flatten"
        case .softmax: return "softmax"
        }
    }

    func block(_ block: Block, _ x: Activation, path: String) throws -> Activation {
        let forked = try ops(block.pre, x, path: path + ".pre")
        let residual = try ops(block.residual, forked, path: path + ".residual")
        let shortcut = try ops(block.shortcut, forked, path: path + ".shortcut")
        let subject = "block '\(block.name)'"
        switch (residual, shortcut) {
        case let (.spatial(a), .spatial(b)) where a != b:
            throw SpecViolation(path: path, subject: subject,
                                reason: "residual branch gives \(a) channels but the shortcut gives \(b); they cannot be added")
        case let (.flat(a?, _), .flat(b?, _)) where a != b:
            throw SpecViolation(path: path, subject: subject,
                                reason: "residual branch gives \(a) features but the shortcut gives \(b); they cannot be added")
        case (.spatial, .flat), (.flat, .spatial):
            throw SpecViolation(path: path, subject: subject,
                                reason: "one branch gives an (N, C, H, W) activation and the other a flat one; they cannot be added")
        default:
            break
        }
        return try ops(block.post, residual, path: path + ".post")
    }

    func ops(_ list: [Op], _ input: Activation, path: String) throws -> Activation {
        var x = input
        for (i, op) in list.enumerated() {
            x = try apply(op, x, path: "\(path)[\(i)]")
        }
        return x
    }

    private func apply(_ op: Op, _ x: Activation, path: String) throws -> Activation {
        let subject = Self.kind(op)
        func fail(_ field: String?, _ reason: String) -> SpecViolation {
            SpecViolation(path: field.map { "\(path).\($0)" } ?? path, subject: subject, reason: reason)
        }
        func range(_ v: Int, _ r: ClosedRange<Int>, _ field: String, _ label: String? = nil) throws {
            guard r.contains(v) else { throw fail(field, "\(label ?? field) is \(v), must be in \(r.lowerBound)...\(r.upperBound)") }
        }
        func pair(_ v: [Int], _ field: String) throws {
            guard v.count == 2 else { throw fail(field, "\(field) must have 2 values (height, width), has \(v)") }
            for e in v { try range(e, 1...ForwardRunner.maxWindow, field, "\(field) \(v)") }
        }
        func spatial(_ what: String) throws -> Int {
            switch x {
            case let .spatial(c): return c
            case let .flat(_, since):
                throw fail(nil, "\(what) needs an (N, C, H, W) activation, but the activation is flat (N, features) after \(since)")
            }
        }
        func explicitPadding(_ p: Padding, kernel: [Int]?) throws {
            guard case let .explicit(t, b, l, r) = p else { return }
            for (v, side) in [(t, "top"), (b, "bottom"), (l, "left"), (r, "right")] {
                try range(v, 0...ForwardRunner.maxWindow, "padding", "padding \(side)")
            }
            // A pooling window made only of padding has no maximum and no cells to average.
            if let kernel, kernel.count == 2, !(t < kernel[0] && b < kernel[0] && l < kernel[1] && r < kernel[1]) {
                throw fail("padding", "padding (\(t), \(b), \(l), \(r)) must be smaller than the kernel \(kernel) on every side")
            }
        }
        let maxC = ForwardRunner.maxChannels
        switch op {
        case let .conv(c):
            let channels = try spatial("convolution")
            try pair(c.kernel, "kernel")
            try pair(c.stride, "stride")
            try pair(c.dilation, "dilation")
            try range(c.inChannels, 1...maxC, "inChannels")
            try range(c.outChannels, 1...maxC, "outChannels")
            try range(c.groups, 1...maxC, "groups")
            guard channels == c.inChannels else {
                throw fail("inChannels", "convolution expects \(c.inChannels) input channels, activation has \(channels)")
            }
            guard c.inChannels % c.groups == 0, c.outChannels % c.groups == 0 else {
                throw fail("groups", "groups \(c.groups) must divide both inChannels \(c.inChannels) and outChannels \(c.outChannels)")
            }
            try explicitPadding(c.padding, kernel: nil)
            return .spatial(channels: c.outChannels)
        case let .batchNorm(b):
            try range(b.channels, 1...maxC, "channels")
            let have: Int?
            switch x {
            case let .spatial(c): have = c
            case let .flat(f, _): have = f
            }
            if let have, have != b.channels {
                throw fail("channels", "batch norm has \(b.channels) channels, activation has \(have)")
            }
            guard b.epsilon.isFinite, b.epsilon >= 0 else {
                throw fail("epsilon", "epsilon \(b.epsilon) is not a finite non-negative number")
            }
            return x
        case .relu:
            return x
        case let .maxPool(p), let .avgPool(p):
            let channels = try spatial(subject == "max_pool" ? "max pool" : "average pool")
            try pair(p.kernel, "kernel")
            try pair(p.stride, "stride")
            try explicitPadding(p.padding, kernel: p.kernel)
            return .spatial(channels: channels)
        case let .zeroPad(t, b, l, r):
            let channels = try spatial("zero padding")
            for (v, side) in [(t, "top"), (b, "bottom"), (l, "left"), (r, "right")] {
                try range(v, 0...ForwardRunner.maxWindow, side)
            }
            return .spatial(channels: channels)
        case let .subsample(s):
            let channels = try spatial("subsample")
            try range(s, 1...ForwardRunner.maxWindow, "stride")
            return .spatial(channels: channels)
        case let .channelPad(before, after):
            let channels = try spatial("channel padding")
            try range(before, 0...maxC, "before")
            try range(after, 0...maxC, "after")
            return .spatial(channels: channels + before + after)
        case .globalAvgPool:
            let channels = try spatial("global average pool")
            return .flat(features: channels, since: "\(path) (global_avg_pool)")
        case .flatten:
            if case .flat = x { return x }   // already flat (Keras Flatten after global pooling)
            _ = try spatial("flatten")
            return .flat(features: nil, since: "\(path) (flatten)")
        case let .dense(d):
            guard case let .flat(features, since) = x else {
                throw fail(nil, "dense needs a flat (N, features) activation, but the activation is (N, C, H, W): the spec lacks flatten or global pooling before it")
            }
            try range(d.inFeatures, 1...maxC, "inFeatures")
            try range(d.outFeatures, 1...maxC, "outFeatures")
            if let features, features != d.inFeatures {
                throw fail("inFeatures", "dense expects \(d.inFeatures) input features, activation has \(features)")
            }
            return .flat(features: d.outFeatures, since: since)
        case .softmax:
            guard case .flat = x else {
                throw fail(nil, "softmax needs a flat (N, classes) activation, but the activation is (N, C, H, W)")
            }
            return x
        }
    }
}
