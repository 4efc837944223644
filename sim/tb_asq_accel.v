// A plain Verilog-2005 testbench of asq_accel, written from docs/hardware.md (no cocotb, no
// simulator-specific pokes): it must pass on any simulator, under IEEE 1364 and 1800 semantics.
//
// Files (hex, one word a line, named by plusargs):
//   +codes=PATH   N_IMAGES * N_CODES input codes (two's complement, IN_BITS bits), image after image
//   +expect=PATH  N_IMAGES * (N_LOGITS + 1) output values: each image's logits, then its class
// Parameters (iverilog -Ptb.NAME=VALUE): N_IMAGES, N_CODES, N_LOGITS, IN_BITS, SEED.
//
// Checks: every output beat's value and last flag; no beat transfers while rst is high (i__ready
// and o__valid are low in reset); i__ready and o__valid are never X or Z once reset has been
// applied. Input gaps and output back-pressure come from an LFSR. Prints "PASS <n> images" or
// "FAIL ..." lines, then finishes.
`timescale 1ns / 1ps

module tb;
    parameter N_IMAGES = 2;
    parameter N_CODES = 64;
    parameter N_LOGITS = 10;
    parameter IN_BITS = 8;
    parameter SEED = 1;
    parameter TIMEOUT_CYCLES = 200000;

    localparam N_BEATS = N_LOGITS + 1;

    reg clk = 1'b0;
    reg rst = 1'b1;
    reg i_valid = 1'b0;
    reg [IN_BITS-1:0] i_payload = {IN_BITS{1'b0}};
    reg o_ready = 1'b0;
    wire i_ready;
    wire o_valid;
    wire [32:0] o_payload;  // value (signed 32) at bit 0, last at bit 32
    wire [31:0] cycles;

    asq_accel dut (
        .clk(clk), .rst(rst),
        .i__valid(i_valid), .i__ready(i_ready), .i__payload(i_payload),
        .o__valid(o_valid), .o__ready(o_ready), .o__payload(o_payload),
        .cycles(cycles)
    );

    reg [IN_BITS-1:0] codes [0:N_IMAGES*N_CODES-1];
    reg [31:0] expected [0:N_IMAGES*N_BEATS-1];
    reg [1023:0] path;

    integer in_k = 0;      // input codes transferred
    integer out_k = 0;     // output beats transferred
    integer errors = 0;
    integer cycle = 0;
    integer reset_cycles = 3;
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
        lfsr = SEED;
    end

    always #5 clk = ~clk;

    // Transfers happen at rising edges with valid & ready (the documented rule).
    always @(posedge clk) begin
        cycle = cycle + 1;
        if (rst) begin
            if (i_ready !== 1'b0 || o_valid !== 1'b0) begin
                $display("FAIL cycle %0d: i__ready=%b o__valid=%b while rst is high", cycle, i_ready, o_valid);
                errors = errors + 1;
            end
        end else begin
            if (i_ready === 1'bx || i_ready === 1'bz || o_valid === 1'bx || o_valid === 1'bz) begin
                $display("FAIL cycle %0d: i__ready=%b o__valid=%b after reset", cycle, i_ready, o_valid);
                errors = errors + 1;
                $finish;
            end
            if (i_valid && i_ready)
                in_k = in_k + 1;
            if (o_valid && o_ready) begin
                if (o_payload[31:0] !== expected[out_k] || o_payload[32] !== (out_k % N_BEATS == N_LOGITS)) begin
                    $display("FAIL image %0d beat %0d: got value %0d last %b, expected %0d last %b",
                             out_k / N_BEATS, out_k % N_BEATS, $signed(o_payload[31:0]), o_payload[32],
                             $signed(expected[out_k]), out_k % N_BEATS == N_LOGITS);
                    errors = errors + 1;
                end
                out_k = out_k + 1;
                if (out_k == N_IMAGES * N_BEATS) begin
                    if (errors == 0)
                        $display("PASS %0d images", N_IMAGES);
                    $finish;
                end
            end
        end
        if (cycle > TIMEOUT_CYCLES) begin
            $display("FAIL timeout after %0d cycles: %0d codes in, %0d beats out", cycle, in_k, out_k);
            $finish;
        end
    end

    // Inputs change half a period after each rising edge: gaps on i, back-pressure on o.
    always @(negedge clk) begin
        lfsr = {lfsr[30:0], lfsr[31] ^ lfsr[21] ^ lfsr[1] ^ lfsr[0]};
        if (cycle >= reset_cycles)
            rst = 1'b0;
        // Offered during reset as well: the design must not take it (i__ready low in reset).
        i_valid = in_k < N_IMAGES * N_CODES && lfsr[2:0] != 3'b000;
        i_payload = in_k < N_IMAGES * N_CODES ? codes[in_k] : {IN_BITS{1'b0}};
        o_ready = lfsr[5:4] != 2'b00;
    end
endmodule
