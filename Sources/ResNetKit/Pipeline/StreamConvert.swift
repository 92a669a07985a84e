import CKernels
import Foundation

/// `convert --no-verify` at float32 without BN folding, one tensor at a time: the file is read for
/// its structure (readers record where each tensor lives, see ``DeferredSources``), mapped as
/// usual, then each canonical tensor is read from the source, put into canonical layout in one
/// scratch buffer and written (``RNWStreamWriter``). Returns nil, having written nothing, when the
/// input cannot be streamed (a `.rnw` or safetensors input, a canonical tensor without a recorded
/// source); the caller then takes the materialising path.
func convertStreaming(input: String, output: String, options: ConversionOptions, sourceHash: InBackground<String>,
                      progress: ((String) -> Void)?, failAfterBytes: Int? = nil,
                      chunkBytes: Int = 2 << 20) throws -> ConversionReport? {
    guard options.skipVerification, options.dtype == .float32, !options.foldBatchNorm else { return nil }
    progress?("reading \(input)")
    let deferred = DeferredSources()
    let loaded = try DeferredSources.$current.withValue(deferred) {
        try loadModel(path: input, arch: options.arch, mapFile: options.mapFile, weights: options.weights)
    }
    PhaseTrace.mark("structure loaded")
    guard let plan = StreamPlan(spec: loaded.model.spec, mapping: loaded.mapping, sources: deferred) else { return nil }
    let spec = loaded.model.spec

    progress?("writing \(output)")
    let provenance = RNWProvenance(sourceFormat: loaded.format, sourcePath: URL(fileURLWithPath: input).lastPathComponent,
                                   sourceSHA256: "", scheme: spec.family,
                                   unwrappingNotes: loaded.notes, toolVersion: toolVersion)
    let scratch = UnsafeMutableBufferPointer<Float>.allocate(capacity: max(plan.largestTransformed, 1))
    defer { scratch.deallocate() }
    // Tensors rearranged straight from the mapped source have their pages mapped in one call before
    // they are read and dropped from the resident set once the next tensor starts.
    var inUse: DeferredSources.MappedRange?
    defer { inUse?.release() }
    let outcome = try RNWStreamWriter.write(spec: spec, to: output, provenance: provenance, sourceHash: { try sourceHash.value() },
        produce: { i in
            inUse?.release()
            // Only rearranged tensors are read from the mapping; the others are read with pread.
            inUse = plan.steps[i].transpose == nil ? nil : plan.steps[i].source.mapped
            inUse?.prefault()
            return plan.steps[i].producer(scratch: scratch)
        },
        verify: { staged, entries in
            // The reopened file must describe exactly what was written: the reader checks header,
            // manifest, placement and padding. The tensor bytes are not read back (--no-verify): their
            // checksums were taken from the very bytes handed to the kernel, and every reader checks them.
            let back = try RNWReader(path: staged, verifyChecksums: false)
            guard back.spec == spec else {
                throw ResNetError.parityFailed(reason: "read-back of \(output): the stored spec differs from the one written")
            }
            guard back.manifest.tensors == entries else {
                throw ResNetError.parityFailed(reason: "read-back of \(output): the stored tensor entries differ from the ones written")
            }
        }, failAfterBytes: failAfterBytes, chunkBytes: chunkBytes)
    PhaseTrace.mark("streamed conversion done")
    var notes = loaded.notes
    notes.append("--no-verify: no forward-pass check was run and the tensor data was not read back; only the written header and manifest were checked")
    let check = ParityCheck(reference: "read-back", passed: true, report: nil,
                            detail: "reopened \(output): header, spec and manifest as written; the \(outcome.entries.count) tensors' checksums taken from the bytes written (streamed, one tensor at a time; tensor data not read back under --no-verify)")
    return ConversionReport(input: input, output: output, format: loaded.format, family: spec.family,
                            classes: spec.classes, tensors: outcome.entries.count, checks: [check],
                            passed: true, forced: false, notes: notes)
}

/// For each canonical parameter, in the spec's order, where its values come from and how they
/// are rearranged.
struct StreamPlan {
    struct Step {
        let source: DeferredSources.Entry
        let name: String
        /// Source shape as (spatial, in, out) for a kernel stored HWIO or (in, out): the values are
        /// transposed to (out, in, spatial); nil when the layouts already agree.
        let transpose: (hw: Int, i: Int, o: Int)?

        /// How the writer gets this tensor: rows of output channels straight from the mapped
        /// source when it is mapped and rearranged, else whole (read, then rearranged in `scratch`).
        func producer(scratch: UnsafeMutableBufferPointer<Float>) -> RNWStreamWriter.Producer {
            if let t = transpose, let mapped = source.mapped {
                return .rows(length: t.i * t.hw) { rows, out in
                    transposeToOIHW(mapped.floats, out, hw: t.hw, i: t.i, o: t.o, outputs: rows)
                }
            }
            return .whole { out in
                guard let t = transpose else {
                    try source.fill(out)
                    return
                }
                let src = UnsafeMutableBufferPointer(rebasing: scratch[0 ..< out.count])
                try source.fill(src)
                transposeToOIHW(UnsafeBufferPointer(src), out, hw: t.hw, i: t.i, o: t.o)
            }
        }
    }

    let steps: [Step]
    let largestTransformed: Int

    /// Nil when some parameter has no single recorded source, or shapes and transform disagree.
    init?(spec: ResNetSpec, mapping: [TensorOrigin], sources: DeferredSources) {
        var origins: [String: TensorOrigin] = [:]
        for o in mapping {
            if origins[o.canonical] != nil { return nil }
            origins[o.canonical] = o
        }
        var steps: [Step] = []
        var largest = 0
        for p in spec.parameters {
            guard let o = origins[p.name], o.shape == p.shape, !sources.ambiguous.contains(o.source),
                  let e = sources.entries[o.source] else { return nil }
            let s = e.shape
            switch o.transform {
            case "":
                guard s == p.shape else { return nil }
                steps.append(Step(source: e, name: p.name, transpose: nil))
            case "HWIO→OIHW":
                guard s.count == 4, p.shape == [s[3], s[2], s[0], s[1]] else { return nil }
                steps.append(Step(source: e, name: p.name, transpose: (s[0] * s[1], s[2], s[3])))
                largest = max(largest, p.shape.reduce(1, *))
            case "(in,out)→(out,in)":
                guard s.count == 2, p.shape == [s[1], s[0]] else { return nil }
                steps.append(Step(source: e, name: p.name, transpose: (1, s[0], s[1])))
                largest = max(largest, p.shape.reduce(1, *))
            default:
                return nil
            }
        }
        self.steps = steps
        largestTransformed = largest
    }
}

/// Which implementation ``transposeToOIHW(_:_:hw:i:o:outputs:path:)`` uses. The results are the
/// same bytes either way (values are only moved); tests ask for each one explicitly.
enum TransposePath: Sendable {
    /// The 4×4-tile Swift loops, built for baseline x86-64.
    case swift
    /// The 8×8-tile AVX2 kernel in CKernels; the Swift loops where the CPU lacks AVX2.
    case avx2

    /// AVX2 where the CPU has it: 8×8 register tiles of 16 outputs at a time take the Keras
    /// ResNet-50 kernels out of a mapped file in less time than the Swift tiles (docs/INTERNALS.md, "Streamed conversion").
    static let best: TransposePath = CPUFeatures.avx2FMA ? .avx2 : .swift
}

/// dst[o][i][s] = src[s][i][o] for a kernel of `hw` spatial positions, `i` inputs, `o` outputs:
/// Keras HWIO (or a dense (in, out)) to PyTorch OIHW (or (out, in)), for the outputs in `outputs`
/// (all by default): `dst` holds just their rows, `outputs.count × i × hw` values. It is a set of
/// 2-D transposes: of the whole (in × out) matrix when `hw` is 1, else of one (hw × out) matrix per
/// input channel. Each is done in 4×4 tiles (four SIMD loads, four SIMD stores), which made it
/// about 3× faster than one element at a time on the largest ResNet-50 kernels. Where the CPU has
/// AVX2 the C kernel in CKernels (ckernels_transpose.h) runs instead (`path`, for tests).
func transposeToOIHW(_ src: UnsafeBufferPointer<Float>, _ dst: UnsafeMutableBufferPointer<Float>, hw: Int, i: Int, o: Int,
                     outputs: Range<Int>? = nil, path: TransposePath = .best) {
    let rows = outputs ?? 0 ..< o
    precondition(src.count == hw * i * o && rows.lowerBound >= 0 && rows.upperBound <= o && dst.count == rows.count * i * hw)
    guard let s = src.baseAddress, let d = dst.baseAddress, !rows.isEmpty else { return }
    // The kernel fails only when it cannot allocate its row table; the Swift loops then do the work.
    if path == .avx2, CPUFeatures.avx2FMA,
       ckernels_transpose_oihw_avx2(s, d, hw, i, o, rows.lowerBound, rows.upperBound) == 0 {
        return
    }
    let dstRow = i * hw
    if hw == 1 {
        transpose2D(s + rows.lowerBound, rows: i, srcRow: o, d, cols: rows.count, dstRow: dstRow)
    } else {
        for ii in 0 ..< i {
            transpose2D(s + ii * o + rows.lowerBound, rows: hw, srcRow: i * o, d + ii * hw, cols: rows.count, dstRow: dstRow)
        }
    }
}

/// d[c * dstRow + r] = s[r * srcRow + c] for r < rows, c < cols.
@inline(__always)
private func transpose2D(_ s: UnsafePointer<Float>, rows: Int, srcRow: Int, _ d: UnsafeMutablePointer<Float>, cols: Int, dstRow: Int) {
    let rows4 = rows & ~3, cols4 = cols & ~3
    var c = 0
    while c < cols4 {
        var r = 0
        while r < rows4 {
            let a = UnsafeRawPointer(s + r * srcRow + c).loadUnaligned(as: SIMD4<Float>.self)
            let b = UnsafeRawPointer(s + (r + 1) * srcRow + c).loadUnaligned(as: SIMD4<Float>.self)
            let e = UnsafeRawPointer(s + (r + 2) * srcRow + c).loadUnaligned(as: SIMD4<Float>.self)
            let f = UnsafeRawPointer(s + (r + 3) * srcRow + c).loadUnaligned(as: SIMD4<Float>.self)
            UnsafeMutableRawPointer(d + c * dstRow + r).storeBytes(of: SIMD4(a[0], b[0], e[0], f[0]), as: SIMD4<Float>.self)
            UnsafeMutableRawPointer(d + (c + 1) * dstRow + r).storeBytes(of: SIMD4(a[1], b[1], e[1], f[1]), as: SIMD4<Float>.self)
            UnsafeMutableRawPointer(d + (c + 2) * dstRow + r).storeBytes(of: SIMD4(a[2], b[2], e[2], f[2]), as: SIMD4<Float>.self)
            UnsafeMutableRawPointer(d + (c + 3) * dstRow + r).storeBytes(of: SIMD4(a[3], b[3], e[3], f[3]), as: SIMD4<Float>.self)
            r += 4
        }
        while r < rows {
            for k in c ..< c + 4 { d[k * dstRow + r] = s[r * srcRow + k] }
            r += 1
        }
        c += 4
    }
    while c < cols {
        for r in 0 ..< rows { d[c * dstRow + r] = s[r * srcRow + c] }
        c += 1
    }
}
