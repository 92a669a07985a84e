import Foundation

extension VerificationSummary {
    /// A self-contained HTML page (no scripts, no external files): the verdict, the numbers, and a
    /// log-scale plot of each layer's relative error against the tolerance.
    public var html: String {
        func esc(_ s: String) -> String {
            s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
                .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
        }
        func e(_ v: Double?) -> String { v.map { $0.isFinite ? String(format: "%.3e", $0) : "–" } ?? "–" }
        let verdictColor = passed ? "#1a7f37" : "#cf222e"
        var rows = ""
        for l in layers {
            rows += "<tr class=\"\(l.passed ? "ok" : "bad")\"><td>\(esc(l.name))</td><td>\(e(l.maxAbsError))</td><td>\(e(l.maxRelError))</td><td>\(l.passed ? "ok" : "diverges" + (l.problem.map { " — " + esc($0) } ?? ""))</td></tr>\n"
        }
        let verdict = passed ? "PASSED" : "FAILED"
        let headline = firstDivergentLayer.map { "first divergent layer: <b>\(esc($0))</b>" } ?? (layers.isEmpty ? "no per-layer activations in the reference" : "every layer within tolerance")
        return """
        <!doctype html>
        <html lang="en"><head><meta charset="utf-8">
        <title>resnet-convert verify: \(verdict)</title>
        <style>
        body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2.5em auto; max-width: 960px; color: #1f2328; padding: 0 1em; }
        h1 { font-size: 1.6em; margin: 0 0 .2em; }
        .verdict { display: inline-block; padding: .15em .6em; border-radius: .3em; color: white; background: \(verdictColor); font-weight: 700; }
        .sub { color: #57606a; margin: .2em 0 1.2em; word-break: break-all; }
        table { border-collapse: collapse; margin: 1em 0; width: 100%; }
        th, td { text-align: left; padding: .3em .8em; border-bottom: 1px solid #d0d7de; font-variant-numeric: tabular-nums; }
        th { background: #f6f8fa; }
        tr.bad td { background: #ffebe9; }
        .numbers td:first-child { color: #57606a; width: 14em; }
        svg { background: #fff; border: 1px solid #d0d7de; border-radius: .3em; }
        </style></head><body>
        <h1><span class="verdict">\(verdict)</span> parity check</h1>
        <div class="sub">\(esc(model)) against \(esc(reference))<br>\(headline)</div>
        \(plotSVG(esc: esc))
        <table class="numbers">
        <tr><td>max |error|</td><td>\(e(maxAbsError))</td></tr>
        <tr><td>max relative error</td><td>\(e(maxRelError)) (tolerance \(e(tolerance)))</td></tr>
        <tr><td>mean |error|</td><td>\(e(meanAbsError))</td></tr>
        <tr><td>cosine similarity</td><td>\(cosine.map { String(format: "%.9f", $0) } ?? "–")</td></tr>
        <tr><td>top-1 agreement</td><td>\(top1PerItem.filter { $0 }.count) of \(top1PerItem.count) inputs</td></tr>
        <tr><td>top-5 agreement</td><td>\(top5Agreement.map { String(format: "%.0f%%", $0 * 100) } ?? "–")</td></tr>
        <tr><td>tolerance policy</td><td>\(esc(toleranceNote ?? "–"))</td></tr>
        \(nonFinite.map { "<tr class=\"bad\"><td>non-finite values</td><td>\(esc($0))</td></tr>" } ?? "")
        </table>
        \(layers.isEmpty ? "" : "<h2>Per-layer comparison</h2><table><tr><th>layer</th><th>max |error|</th><th>relative error</th><th>verdict</th></tr>\n\(rows)</table>")
        </body></html>
        """
    }

    /// Relative error per layer on a log axis, with the tolerance as a dashed line.
    private func plotSVG(esc: (String) -> String) -> String {
        let points = layers.map { ($0.name, $0.maxRelError.isFinite ? max($0.maxRelError, 1e-12) : 1.0, $0.passed) }
        guard !points.isEmpty else { return "" }
        let tol = tolerance ?? 1e-4
        let width = 900.0, height = 320.0, left = 70.0, right = 20.0, top = 20.0, bottom = 90.0
        let values = points.map(\.1) + [tol]
        let lo = floor(log10(values.min()!)) - 0.5, hi = ceil(log10(values.max()!)) + 0.5
        func y(_ v: Double) -> Double { top + (hi - log10(v)) / (hi - lo) * (height - top - bottom) }
        let step = (width - left - right) / Double(max(points.count, 1))
        func x(_ i: Int) -> Double { left + step * (Double(i) + 0.5) }
        var svg = "<svg width=\"100%\" viewBox=\"0 0 \(Int(width)) \(Int(height))\" xmlns=\"http://www.w3.org/2000/svg\" font-family=\"system-ui, sans-serif\" font-size=\"11\">"
        var d = Int(lo.rounded(.up))
        while Double(d) <= hi {
            let yy = y(pow(10, Double(d)))
            svg += "<line x1=\"\(left)\" x2=\"\(width - right)\" y1=\"\(yy)\" y2=\"\(yy)\" stroke=\"#eaeef2\"/>"
            svg += "<text x=\"\(left - 8)\" y=\"\(yy + 4)\" text-anchor=\"end\" fill=\"#57606a\">1e\(d)</text>"
            d += 1
        }
        let ty = y(tol)
        svg += "<line x1=\"\(left)\" x2=\"\(width - right)\" y1=\"\(ty)\" y2=\"\(ty)\" stroke=\"#cf222e\" stroke-dasharray=\"6 4\"/>"
        svg += "<text x=\"\(width - right - 4)\" y=\"\(ty - 6)\" text-anchor=\"end\" fill=\"#cf222e\">tolerance \(String(format: "%.0e", tol))</text>"
        let path = points.enumerated().map { "\($0.offset == 0 ? "M" : "L")\(x($0.offset)),\(y($0.element.1))" }.joined(separator: " ")
        svg += "<path d=\"\(path)\" fill=\"none\" stroke=\"#0969da\" stroke-width=\"1.5\"/>"
        for (i, p) in points.enumerated() {
            svg += "<circle cx=\"\(x(i))\" cy=\"\(y(p.1))\" r=\"4\" fill=\"\(p.2 ? "#0969da" : "#cf222e")\"><title>\(esc(p.0)): \(String(format: "%.3e", p.1))</title></circle>"
            svg += "<text transform=\"translate(\(x(i)),\(height - bottom + 12)) rotate(45)\" fill=\"#1f2328\">\(esc(p.0))</text>"
        }
        svg += "<text x=\"14\" y=\"\((height - bottom + top) / 2)\" transform=\"rotate(-90 14 \((height - bottom + top) / 2))\" text-anchor=\"middle\" fill=\"#57606a\">relative error (log)</text>"
        return svg + "</svg>"
    }
}
