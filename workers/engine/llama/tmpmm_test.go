package llama

import "testing"

func old4x1(o, w0, w1, w2, w3, x []float32) {
	w1, w2, w3 = w1[:len(w0)], w2[:len(w0)], w3[:len(w0)]
	x = x[:len(w0)]
	o = o[:4]
	var a0, a1, a2, a3 float32
	for j, a := range w0 {
		p := x[j]
		a0 += float32(a * p)
		a1 += float32(w1[j] * p)
		a2 += float32(w2[j] * p)
		a3 += float32(w3[j] * p)
	}
	o[0], o[1], o[2], o[3] = a0, a1, a2, a3
}

func BenchmarkTmpMM(b *testing.B) {
	const d, in = 176, 64
	w := make([]float32, d*in)
	x := make([]float32, in)
	o := make([]float32, d)
	for i := range w {
		w[i] = float32(i%7) * 0.1
	}
	b.Run("4x1", func(b *testing.B) {
		for b.Loop() {
			for i := 0; i < d; i += 4 {
				old4x1(o[i:i+4], w[i*in:(i+1)*in], w[(i+1)*in:(i+2)*in], w[(i+2)*in:(i+3)*in], w[(i+3)*in:(i+4)*in], x)
			}
		}
		b.ReportMetric(float64(cpuTime(b))/float64(b.N), "cpu-ns/op")
	})
	b.Run("8x1", func(b *testing.B) {
		for b.Loop() {
			for i := 0; i < d; i += 8 {
				dot8x1(o[i:i+8], w[i*in:(i+8)*in], x)
			}
		}
		b.ReportMetric(float64(cpuTime(b))/float64(b.N), "cpu-ns/op")
	})
}
