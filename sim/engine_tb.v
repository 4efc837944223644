// A plain Verilog testbench of the graph engine (graph_engine): no cocotb, so Verilator runs it
// as one compiled binary (`verilator --binary`), the fastest way through a whole ResNet-20 image.
//
// Files (hex, one word a line, named by plusargs):
//   +codes=PATH   N_IMAGES * N_CODES input codes (two's complement, IN_BITS bits), image after image
//   +expect=PATH  N_IMAGES * N_OUT output values (two's complement, OUT_BITS bits)
//   +out=PATH     written: one line per output beat, "<image> <index> <value>" (decimal)
//   +images=N     images to run (default and at most N_IMAGES, the files' capacity)
//   +seed=S       the LFSR's seed (nonzero; default 1)
// Parameters (-G NAME=VALUE): N_IMAGES, N_CODES, N_OUT, IN_BITS, OUT_BITS, TIMEOUT_CYCLES (the most
// cycles without any transfer on either stream: a hung engine fails instead of running forever).
//
// Checks every output beat's value and its last flag (on the image's final value only). Input gaps
// and output back-pressure come from an LFSR (an input beat is offered 7 cycles in 8, the output
// is ready 3 in 4). Prints "IMAGE <n> CYCLES <c>" after each image (the engine's cycles port),
// "FAIL ..." lines, then "PASS <n> images" or "MISMATCHES <n>", and finishes.
`timescale 1ns / 1ps

module tb;
    parameter N_IMAGES = 1;
    parameter N_CODES = 3072;
    parameter N_OUT = 10;
    parameter IN_BITS = 8;
    parameter OUT_BITS = 32;
    parameter TIMEOUT_CYCLES = 100000000;

    reg clk = 1'b0;
    reg rst = 1'b1;
    reg i_valid = 1'b0;
    reg [IN_BITS-1:0] i_payload = {IN_BITS{1'b0}};
    reg o_ready = 1'b0;
    wire i_ready;
    wire o_valid;
    wire [OUT_BITS:0] o_payload;  // value (signed OUT_BITS) at bit 0, last at bit OUT_BITS
    wire [31:0] cycles;
    // The value as a signed wire of its own: Verilator 5.049 prints $signed() of the payload's slice
    // with the last bit above it when that bit is set.
    wire signed [OUT_BITS-1:0] o_value = o_payload[OUT_BITS-1:0];

    graph_engine dut (
        .clk(clk), .rst(rst),
        .i__valid(i_valid), .i__ready(i_ready), .i__payload(i_payload),
        .o__valid(o_valid), .o__ready(o_ready), .o__payload(o_payload),
        .cycles(cycles)
    );

    reg [IN_BITS-1:0] codes [0:N_IMAGES*N_CODES-1];
    reg [OUT_BITS-1:0] expected [0:N_IMAGES*N_OUT-1];
    reg [1023:0] path;

    integer in_k = 0;      // input codes transferred
    integer out_k = 0;     // output beats transferred
    integer errors = 0;
    reg [63:0] cycle = 0;       // 64 bits: the whole test split is billions of cycles
    integer quiet = 0;         // cycles since the last transfer
    integer out_file = 0;
    integer reset_cycles = 3;
    integer n_images = N_IMAGES;
    integer seed = 1;
    reg report_cycles = 1'b0;
    reg [31:0] lfsr = 32'h1;

    initial begin
        if (!$value$plusargs("codes=%s", path)) begin
            $display("FAIL no +codes=PATH");
            $finish;
        end
        $readmemh(path, codes);
        if (!$value$plusargs("expect=%s", path)) begin
            $display("FAIL no +expect=PATH");
            $finish;
        end
        $readmemh(path, expected);
        if ($value$plusargs("out=%s", path))
            out_file = $fopen(path, "w");
        if ($value$plusargs("images=%d", n_images) && (n_images < 1 || n_images > N_IMAGES)) begin
            $display("FAIL +images=%0d outside 1..%0d", n_images, N_IMAGES);
            $finish;
        end
        if ($value$plusargs("seed=%d", seed) && seed == 0)
            seed = 1;
        lfsr = seed;
    end

    always #5 clk = ~clk;

    // Transfers happen at rising edges with valid & ready.
    always @(posedge clk) begin
        cycle = cycle + 1;
        if (report_cycles) begin  // the cycles port counts up to the last beat: read it one edge later
            $display("IMAGE %0d CYCLES %0d", out_k / N_OUT - 1, cycles);
            $fflush;  // stdout is a pipe to the runner's progress bar: not line-buffered
            report_cycles = 1'b0;
        end
        if (!rst) begin
            quiet = quiet + 1;
            if (i_valid && i_ready) begin
                in_k = in_k + 1;
                quiet = 0;
            end
            if (o_valid && o_ready) begin
                if (out_file != 0)
                    $fwrite(out_file, "%0d %0d %0d\n", out_k / N_OUT, out_k % N_OUT, o_value);
                if (o_payload[OUT_BITS-1:0] !== expected[out_k] || o_payload[OUT_BITS] !== (out_k % N_OUT == N_OUT - 1)) begin
                    if (errors < 20)
                        $display("FAIL image %0d index %0d: got value %0d last %b, expected %0d last %b",
                                 out_k / N_OUT, out_k % N_OUT, o_value, o_payload[OUT_BITS],
                                 $signed(expected[out_k]), out_k % N_OUT == N_OUT - 1);
                    errors = errors + 1;
                end
                out_k = out_k + 1;
                quiet = 0;
                if (out_k % N_OUT == 0)
                    report_cycles = 1'b1;
            end
            if (out_k == n_images * N_OUT && !report_cycles) begin
                if (errors == 0)
                    $display("PASS %0d images", n_images);
                else
                    $display("MISMATCHES %0d", errors);
                if (out_file != 0)
                    $fclose(out_file);
                $finish;
            end
        end
        if (quiet > TIMEOUT_CYCLES) begin
            $display("FAIL timeout: %0d cycles without a transfer at cycle %0d: %0d codes in, %0d values out",
                     quiet, cycle, in_k, out_k);
            $finish;
        end
    end

    // Inputs change half a period after each rising edge: gaps on i, back-pressure on o.
    always @(negedge clk) begin
        lfsr = {lfsr[30:0], lfsr[31] ^ lfsr[21] ^ lfsr[1] ^ lfsr[0]};
        if (cycle >= reset_cycles)
            rst = 1'b0;
        i_valid = in_k < n_images * N_CODES && lfsr[2:0] != 3'b000;
        i_payload = in_k < n_images * N_CODES ? codes[in_k] : {IN_BITS{1'b0}};
        o_ready = lfsr[5:4] != 2'b00;
    end
endmodule
