// Folding an inference BatchNorm into the convolution right before it.
//
// conv:  y[o] = Σ w[o, …] x[…] + b[o]            (b = 0 when the conv has no bias)
// bn:    z[o] = (y[o] - mean[o]) · k[o] + beta[o],  k[o] = gamma[o] / sqrt(var[o] + eps)
// so     z[o] = Σ (w[o, …] · k[o]) x[…] + ((b[o] - mean[o]) · k[o] + beta[o])
// which is one conv with weight w·k and a bias. Only a BN that directly follows a conv in the same
// op list is folded: anything between them (a ReLU in the seed models' conv→ReLU→BN order, a block
// boundary, the add of a residual block) makes the rewrite wrong. The arithmetic is done in double
// and rounded once, so the folded weights are the float32 values nearest the exact products.

import Foundation

extension ResNetModel {
    /// The same function with every BatchNorm that directly follows a convolution folded into it.
    ///
    /// The conv gains a bias (`<conv>.bias`) and the BN op and its four tensors disappear from the
    /// spec; BNs after anything else (pre-activation BNs, BN after a ReLU) are kept.
    /// - Returns: the folded model and the names of the BNs that were folded, in spec order.
    /// - Throws: ``ResNetError/mapping(file:reason:)`` when the model does not match its spec.
    public func foldingBatchNorm() throws -> (model: ResNetModel, folded: [String]) {
        try validate()
        var tensors = self.tensors
        var folded: [String] = []

        func fold(_ ops: [Op]) -> [Op] {
            var out: [Op] = []
            var i = 0
            while i < ops.count {
                if case var .conv(c) = ops[i], i + 1 < ops.count, case let .batchNorm(b) = ops[i + 1], b.channels == c.outChannels {
                    let weight = tensors["\(c.name).weight"]!
                    let bias = c.bias ? tensors["\(c.name).bias"]!.data : [Float](repeating: 0, count: c.outChannels)
                    let gamma = b.scale ? tensors["\(b.name).weight"]!.data : [Float](repeating: 1, count: b.channels)
                    let beta = b.center ? tensors["\(b.name).bias"]!.data : [Float](repeating: 0, count: b.channels)
                    let mean = tensors["\(b.name).running_mean"]!.data
                    let variance = tensors["\(b.name).running_var"]!.data
                    let per = weight.count / c.outChannels
                    var w = weight.data
                    var newBias = [Float](repeating: 0, count: c.outChannels)
                    for o in 0..<c.outChannels {
                        let k = Double(gamma[o]) / (Double(variance[o]) + b.epsilon).squareRoot()
                        for j in (o * per)..<((o + 1) * per) { w[j] = Float(Double(w[j]) * k) }
                        newBias[o] = Float((Double(bias[o]) - Double(mean[o])) * k + Double(beta[o]))
                    }
                    tensors["\(c.name).weight"] = Tensor(shape: weight.shape, data: w)
                    tensors["\(c.name).bias"] = Tensor(shape: [c.outChannels], data: newBias)
                    for p in Op.batchNorm(b).parameters { tensors[p.name] = nil }
                    c.bias = true
                    out.append(.conv(c))
                    folded.append(b.name)
                    i += 2
                } else {
                    out.append(ops[i])
                    i += 1
                }
            }
            return out
        }

        var spec = self.spec
        spec.stem = fold(spec.stem)
        for s in spec.stages.indices {
            for b in spec.stages[s].blocks.indices {
                spec.stages[s].blocks[b].pre = fold(spec.stages[s].blocks[b].pre)
                spec.stages[s].blocks[b].residual = fold(spec.stages[s].blocks[b].residual)
                spec.stages[s].blocks[b].shortcut = fold(spec.stages[s].blocks[b].shortcut)
                spec.stages[s].blocks[b].post = fold(spec.stages[s].blocks[b].post)
            }
        }
        spec.head = fold(spec.head)
        let model = ResNetModel(spec: spec, tensors: tensors)
        try model.validate()
        return (model, folded)
    }
}
