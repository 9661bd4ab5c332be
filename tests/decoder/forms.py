"""Instruction sets for the decoder's differential test, generated as GNU assembler text
(Intel syntax) from mnemonic x operand-form tables, for 16-, 32- and 64-bit code.

A form is a comma-separated operand list over this vocabulary (each placeholder takes
turns through registers and addressing forms of the mode, so every addressing form meets
many instructions):
    r8 r16 r32 r64 rv   general registers (rv: r16, r32 and r64 where the mode has it)
    m8 ... m512 mv      memory with its size keyword (mv: the size of rv, paired with it)
    m                   memory without a keyword (the instruction implies the size)
    m80 m48 mfar        TBYTE, FWORD, and a far pointer of the operand size (DWORD/FWORD)
    i8 i16 i32 iv       immediates (iv: 16 or 32 bits, paired with rv)
    mm x y z k t st     MMX, XMM, YMM, ZMM, mask, AMX tile and x87 stack registers
    x{k} z{kz} ...      a register with a write mask (and zeroing)
    b32 b64 b16         a broadcast memory element ({1toN} is added for the vector length)
    vx vy vz            VSIB memory with an XMM/YMM/ZMM index
    label farlabel      a branch target (relative: within a rel8, and beyond one)
Any other token is copied as it is (fixed registers such as al, dx, cl, xmm0, 1).
Each table entry is (mnemonics, forms, modes); modes default to all three.

`opcode_sweep` covers what no mnemonic list does: every opcode of every map under every
mandatory prefix, W, vector length, broadcast and a memory and a register ModRM, as bytes,
each under its own symbol so that objdump starts decoding afresh at each one.
"""
import pathlib
import re
import subprocess

ALL, NOT64, ONLY64, NOT16 = (16, 32, 64), (16, 32), (64,), (32, 64)

# -- general-purpose, string, system ---------------------------------------------------------
GPR = [
    ("add or adc sbb and sub xor cmp", "r8,m8 m8,r8 rv,mv mv,rv m8,i8 mv,i8 mv,iv al,i8 rv,rv ax,i16 eax,i32"),
    ("test", "m8,r8 mv,rv m8,i8 mv,iv al,i8 eax,i32"),
    ("xchg", "eax,ecx ax,dx"),
    ("bswap", "r32"),
    ("inc dec not neg mul imul div idiv", "m8 mv"),
    ("imul", "rv,mv rv,mv,i8 rv,mv,iv"),
    ("rol ror rcl rcr shl shr sar", "m8,1 mv,1 mv,cl mv,i8 m8,cl m8,i8"),
    ("mov", "m8,r8 r8,m8 mv,rv rv,mv m8,i8 mv,iv m16,es ds,m16 rv,iv r8,i8"),
    ("nop", "mv"),
    ("movzx movsx", "rv,m8 r32,m16"),
    ("lea", "rv,m"),
    ("xchg xadd cmpxchg", "mv,rv m8,r8"),
    ("cmpxchg8b", "m64"),
    ("bt bts btr btc", "mv,rv mv,i8"),
    ("bsf bsr", "rv,mv"),
    ("popcnt tzcnt lzcnt", "rv,mv", NOT16),
    ("shld shrd", "mv,rv,i8 mv,rv,cl"),
    ("sete setne setb setae seta setbe setl setge setg setle sets setns seto setno setp setnp", "m8"),
    ("cmove cmovne cmovb cmovae cmova cmovbe cmovl cmovge cmovg cmovle cmovs cmovns cmovo cmovno",
     "rv,mv", NOT16),
    ("push pop", "mv"),
    ("push", "i8 i32"),
    ("call jmp", "mv"),
    ("call jmp", "mfar"),
    ("jmp call je jne jb jae ja jbe jl jge jg jle js jns jo jno jp jnp loop loope loopne", "label"),
    ("jmp je jo jnp", "farlabel"),
    ("ret retf", "_ i16"),
    ("enter", "i16,0 i16,1 i16,3"),
    ("leave iret int3 hlt nop pause cpuid rdtsc rdtscp cli sti clc stc cld std cmc lahf sahf pushf popf "
     "cbw cwd xlat int1 fwait", "_"),
    ("int", "i8"),
    ("in", "al,i8 eax,i8 al,dx eax,dx"),
    ("out", "i8,al i8,eax dx,al dx,eax"),
    ("jcxz", "label", (16,)),
    ("jecxz", "label", NOT16),
    ("jrcxz", "label", ONLY64),
    ("inc dec push pop", "r16 r32", NOT64),
    ("push pop", "r16 r64", ONLY64),
    ("movsb movsw movsd cmpsb cmpsw cmpsd stosb stosw stosd lodsb lodsw lodsd scasb scasw scasd "
     "insb insw insd outsb outsw outsd", "_"),
    ("rep movsb|rep stosd|repne scasb|repe cmpsw|rep outsb|rep insd", "_"),
    ("movs", "BYTE-PTR-es:[DI],BYTE-PTR-fs:[SI] DWORD-PTR-es:[DI],DWORD-PTR-gs:[SI]"),
    ("lods", "al,BYTE-PTR-ss:[SI]"),
    ("crc32", "r32,m8 r32,m16 r32,m32", NOT16),
    ("movbe", "rv,mv mv,rv", NOT16),
    ("xbegin", "label", NOT16),
    ("xabort", "i8", NOT16),
    ("xend xtest", "_", NOT16),
    ("lock add|lock xadd|lock cmpxchg", "mv,rv"),
    ("lock inc|lock not", "m8 mv"),
    ("push pop", "fs gs"),
    ("pusha popa daa das aaa aas into sysexit", "_", NOT64),
    ("aam aad", "i8", NOT64),
    ("push pop", "es ds", NOT64),
    ("push", "ss cs", NOT64),
    ("pop", "ss", NOT64),
    ("bound", "r16,m32 r32,m64", NOT64),
    ("arpl", "m16,r16", NOT64),
    ("lds les", "r16,m32 r32,m48", NOT64),
    ("lss lfs lgs", "r16,m32 r32,m48"),
    ("jmp call", "far-ptr-0x10:0x20", NOT64),
    ("movsq cmpsq stosq lodsq scasq cdqe cqo iretq swapgs syscall sysretq", "_", ONLY64),
    ("movsxd", "r64,m32 r32,m32", ONLY64),
    ("cmpxchg16b", "m128", ONLY64),
    ("rdfsbase rdgsbase wrfsbase wrgsbase", "r32 r64", ONLY64),
    ("mov", "al,moff rv,moff moff,al moff,rv", NOT64),
    ("movabs", "al,moff rax,moff moff,eax", ONLY64),
    ("adcx adox", "r32,m32", NOT16),
    ("andn", "r32,r32,m32", NOT16),
    ("bextr bzhi sarx shlx shrx", "r32,m32,r32", NOT16),
    ("pdep pext mulx", "r32,r32,m32", NOT16),
    ("rorx", "r32,m32,i8", NOT16),
    ("blsi blsmsk blsr", "r32,m32", NOT16),
    ("andn pdep pext mulx", "r64,r64,m64", ONLY64),
    ("rorx", "r64,m64,i8", ONLY64),
    ("blcfill blci blcic blcmsk blcs blsfill blsic t1mskc tzmsk", "r32,m32", NOT16),
    ("bextr", "r32,m32,i32", NOT16),
    ("llwpcb slwpcb", "r32", NOT16),
    ("lwpins lwpval", "r32,m32,i32", NOT16),
]

SYSTEM = [
    ("lgdt lidt sgdt sidt", "m"),
    ("lldt ltr sldt str lmsw smsw verr verw", "m16"),
    ("lar lsl", "rv,m16"),
    ("invlpg clflush clflushopt clwb cldemote prefetchnta prefetcht0 prefetcht1 prefetcht2 prefetch prefetchw",
     "m8"),
    ("fxsave fxrstor xsave xrstor xsaveopt xsavec xsaves xrstors", "m"),
    ("ldmxcsr stmxcsr", "m32"),
    ("vmptrld vmptrst vmclear vmxon", "m64"),
    ("clts wbinvd invd rdmsr wrmsr rdpmc sysenter rsm monitor mwait xgetbv xsetbv vmcall vmlaunch "
     "vmresume vmxoff vmfunc vmrun vmload vmsave vmmcall stgi clgi skinit invlpga clac stac encls enclu getsec "
     "monitorx mwaitx clzero rdpkru wrpkru serialize ud2 lfence mfence sfence endbr64 endbr32 setssbsy "
     "saveprevssp emms femms", "_"),
    ("ud0 ud1", "r32,m32", NOT16),
    ("mov", "cr0,e_ax e_ax,cr3 cr4,e_ax dr0,e_ax e_ax,dr7"),
    ("rdrand rdseed", "rv"),
    ("rdpid", "r32", NOT64),
    ("rdpid", "r64", ONLY64),
    ("ptwrite", "m32 r32", NOT16),
    ("movnti", "m32,r32", NOT16),
    ("movdiri", "m32,r32", NOT16),
    ("rstorssp clrssbsy", "m64"),
    ("wrssd wrussd", "m32,r32", NOT16),
    ("incsspd rdsspd", "r32", NOT16),
    ("umonitor", "r32", NOT16),
    ("umwait tpause", "r32", NOT16),
    ("invpcid invept invvpid", "r32,m128", NOT64),
    ("invpcid invept invvpid", "r64,m128", ONLY64),
    ("vmread", "m32,r32", NOT64),
    ("vmread", "m64,r64", ONLY64),
    ("vmwrite", "r64,m64", ONLY64),
    ("movdir64b enqcmd enqcmds", "r64,m", ONLY64),
    ("movdir64b", "r32,m", (32,)),
    ("aadd aand aor axor", "m32,r32 m64,r64", ONLY64),
    ("cmpbexadd cmpoxadd cmpsxadd", "m32,r32,r32 m64,r64,r64", ONLY64),
    ("ldtilecfg sttilecfg", "m", ONLY64),
    ("tileloadd tileloaddt1", "t,[rax+rcx*1]", ONLY64),
    ("tilestored", "[rax+rcx*1],t", ONLY64),
    ("tilerelease", "_", ONLY64),
    ("tilezero", "t", ONLY64),
    ("tdpbssd tdpbf16ps", "tmm0,tmm1,tmm2", ONLY64),
    ("aesenc128kl aesdec128kl aesenc256kl aesdec256kl", "xmm2,m", NOT16),
    ("aesencwide128kl aesdecwide256kl", "m", NOT16),
    ("uiret testui clui stui", "_", ONLY64),
    ("wrmsrns rdmsrlist wrmsrlist", "_", ONLY64),
    ("prefetchit0 prefetchit1", "[rip+0x100]", ONLY64),
    ("senduipi", "r64", ONLY64),
]

X87 = [
    ("fld", "m32 m64 m80 st"),
    ("fst", "m32 m64 st"),
    ("fstp", "m32 m64 m80 st"),
    ("fild fistp fisttp", "m16 m32 m64"),
    ("fist", "m16 m32"),
    ("fbld fbstp", "m80"),
    ("fadd fmul fsub fsubr fdiv fdivr", "m32 m64 st(0),st st,st(0)"),
    ("fcom fcomp", "m32 m64 st"),
    ("fiadd fimul ficom ficomp fisub fisubr fidiv fidivr", "m16 m32"),
    ("fldcw fnstcw fnstsw fstcw fstsw", "m16"),
    ("fldenv fnstenv frstor fnsave fstenv fsave", "m"),
    ("fxch fucom fucomp ffree fcomi fucomi fcomip fucomip", "st"),
    ("fcmovb fcmove fcmovbe fcmovu fcmovnb fcmovne fcmovnbe fcmovnu", "st(0),st"),
    ("faddp fmulp fsubp fsubrp fdivp fdivrp", "st,st(0)"),
    ("fsin fcos fsincos fptan fpatan fsqrt fscale fprem fprem1 frndint fxtract fabs fchs ftst fxam fld1 "
     "fldz fldpi fldl2e fldl2t fldlg2 fldln2 f2xm1 fyl2x fyl2xp1 fdecstp fincstp fninit fnclex finit fclex "
     "fcompp fucompp fnop fnstsw", "_"),
    ("fnstsw fstsw", "ax"),
]

# -- MMX, 3DNow!, SSE ... SSE4, AES, SHA ------------------------------------------------------
_MMX_Q = ("paddb paddw paddd paddq paddsb paddsw paddusb paddusw psubb psubw psubd psubq psubsb psubsw psubusb "
          "psubusw pmullw pmulhw pmulhuw pmuludq pmaddwd pand pandn por pxor pcmpeqb pcmpeqw pcmpeqd pcmpgtb "
          "pcmpgtw pcmpgtd packsswb packuswb packssdw punpckhbw punpckhwd punpckhdq pavgb pavgw pmaxub "
          "pminub pmaxsw pminsw psadbw psllw pslld psllq psrlw psrld psrlq psraw psrad pshufb phaddw phaddd "
          "phaddsw pmaddubsw phsubw phsubd phsubsw psignb psignw psignd pmulhrsw pabsb pabsw pabsd")
_3DNOW = ("pfadd pfsub pfsubr pfmul pfacc pfnacc pfpnacc pfcmpeq pfcmpge pfcmpgt pfmax pfmin pfrcp pfrsqrt "
          "pfrcpit1 pfrcpit2 pfrsqit1 pi2fd pf2id pi2fw pf2iw pavgusb pmulhrw pswapd")
_SSE_X = ("addps addpd subps subpd mulps mulpd divps divpd minps minpd maxps maxpd sqrtps sqrtpd rcpps rsqrtps "
          "andps andpd andnps andnpd orps orpd xorps xorpd unpcklps unpcklpd unpckhps unpckhpd cvtdq2ps cvtps2dq "
          "cvttps2dq cvtpd2dq cvttpd2dq cvtpd2ps haddps haddpd hsubps hsubpd addsubps addsubpd movsldup "
          "movshdup " + _MMX_Q + " punpcklbw punpcklwd punpckldq punpcklqdq punpckhqdq pmuldq pcmpeqq "
          "pcmpgtq packusdw pminsb pminsd pminuw pminud pmaxsb pmaxsd pmaxuw pmaxud pmulld phminposuw ptest "
          "aesenc aesenclast aesdec aesdeclast aesimc sha1nexte sha1msg1 sha1msg2 sha256msg1 sha256msg2 "
          "gf2p8mulb")
_SSE_X_I8 = ("pshufd pshufhw pshuflw cmpps cmppd shufps shufpd roundps roundpd blendps blendpd pblendw dpps dppd "
             "mpsadbw palignr pcmpestri pcmpestrm pcmpistri pcmpistrm pclmulqdq aeskeygenassist sha1rnds4 "
             "gf2p8affineqb gf2p8affineinvqb")

SSE = [
    (_MMX_Q, "mm,m64 mm,mm"),
    ("punpcklbw punpcklwd punpckldq", "mm,m32"),
    ("psllw pslld psllq psrlw psrld psrlq psraw psrad", "mm,i8"),
    ("movd", "mm,m32 m32,mm x,m32 m32,x"),
    ("movq", "mm,m64 m64,mm x,m64 m64,x"),
    ("pshufw", "mm,m64,i8"),
    ("pinsrw", "mm,m16,i8 x,m16,i8"),
    ("pextrw", "r32,mm,i8 m16,x,i8"),
    ("pmovmskb", "r32,mm r32,x"),
    ("maskmovq", "mm,mm"),
    ("maskmovdqu", "x,x"),
    ("movntq", "m64,mm"),
    ("palignr", "mm,m64,i8"),
    ("cvtpi2ps cvtpi2pd", "x,m64"),
    ("cvtps2pi cvttps2pi", "mm,m64"),
    ("cvtpd2pi cvttpd2pi", "mm,m128"),
    (_3DNOW, "mm,m64"),
    (_SSE_X, "x,m128 x,x"),
    (_SSE_X_I8, "x,m128,i8"),
    ("movaps movups movapd movupd movdqa movdqu lddqu movntdqa", "x,m128"),
    ("movaps movups movapd movupd movdqa movdqu movntps movntpd movntdq", "m128,x"),
    ("blendvps blendvpd pblendvb", "x,m128,xmm0"),
    ("addss subss mulss divss sqrtss maxss minss comiss ucomiss rcpss rsqrtss cvtss2sd", "x,m32"),
    ("addsd subsd mulsd divsd sqrtsd maxsd minsd comisd ucomisd cvtsd2ss movddup cvtps2pd cvtdq2pd", "x,m64"),
    ("cmpss roundss insertps", "x,m32,i8"),
    ("cmpsd roundsd", "x,m64,i8"),
    ("movss", "x,m32 m32,x"),
    ("movsd", "x,m64 m64,x"),
    ("movhps movlps movhpd movlpd", "x,m64 m64,x"),
    ("cvtss2si cvttss2si", "r32,m32"),
    ("cvtsd2si cvttsd2si", "r32,m64"),
    ("cvtsi2ss cvtsi2sd", "x,m32"),
    ("cvtsi2ss cvtsi2sd", "x,m64", ONLY64),
    ("extractps pextrd", "m32,x,i8"),
    ("pextrb", "m8,x,i8"),
    ("pinsrb", "x,m8,i8"),
    ("pinsrd", "x,m32,i8"),
    ("pinsrq", "x,m64,i8", ONLY64),
    ("pextrq", "m64,x,i8", ONLY64),
    ("pmovsxbw pmovzxbw pmovsxwd pmovzxwd pmovsxdq pmovzxdq", "x,m64"),
    ("pmovsxbd pmovzxbd pmovsxwq pmovzxwq", "x,m32"),
    ("pmovsxbq pmovzxbq", "x,m16"),
    ("movmskps movmskpd", "r32,x"),
    ("movhlps movlhps", "x,x"),
    ("pextrw", "r32,x,i8"),
    ("psrlw psrld psrad psllq psrldq pslldq", "x,i8"),
    ("bndmov", "bnd1,m m,bnd2", (32,)),
    ("bndmov", "bnd1,m m,bnd2", ONLY64),
    ("bndcl bndcu bndcn bndmk", "bnd1,m", NOT16),
    ("bndldx", "bnd1,[eax+ecx*1]", (32,)),
    ("bndstx", "[eax+ecx*1],bnd1", (32,)),
    ("loadiwkey", "xmm1,xmm2", NOT16),
    ("encodekey128 encodekey256", "eax,ecx", NOT16),
    ("aesdecwide128kl aesencwide256kl", "m", NOT16),
    ("extrq", "x,i8,i8 x,x"),
    ("insertq", "x,x,i8,i8 x,x"),
    ("movntss", "m32,x"),
    ("movntsd", "m64,x"),
    ("sha256rnds2", "x,m128,xmm0"),
    ("movq2dq", "x,mm"),
    ("movdq2q", "mm,x"),
]

# -- AVX, AVX2, FMA, F16C, FMA4, XOP ----------------------------------------------------------
_AVX_V = " ".join("v" + name for name in _SSE_X.split() if name not in (
    "phminposuw", "ptest", "aesimc", "sha1nexte", "sha1msg1", "sha1msg2", "sha256msg1", "sha256msg2",
    "movsldup", "movshdup", "sqrtps", "sqrtpd", "rcpps", "rsqrtps", "cvtdq2ps", "cvtps2dq", "cvttps2dq",
    "cvtpd2dq", "cvttpd2dq", "cvtpd2ps", "psllw", "pslld", "psllq", "psrlw", "psrld", "psrlq", "psraw",
    "psrad", "pabsb", "pabsw", "pabsd", "gf2p8mulb", "aesenc", "aesenclast", "aesdec", "aesdeclast"))
_FMA = " ".join(f"vf{kind}{order}{suffix}" for kind in ("madd", "msub", "nmadd", "nmsub")
                for order in ("132", "213", "231") for suffix in ("ps", "pd"))
_FMA_S = " ".join(f"vf{kind}{order}ss" for kind in ("madd", "nmsub") for order in ("132", "231"))
_FMA4 = "vfmaddps vfmaddpd vfmsubps vfnmaddpd vfnmsubps vfmaddsubps vfmsubaddpd"

AVX = [
    (_AVX_V, "x,x,m128 y,y,m256"),
    ("vsqrtps vrcpps vrsqrtps vcvtdq2ps vcvtps2dq vcvttps2dq vmovsldup vmovshdup vptest vtestps vtestpd "
     "vpabsb vpabsd vmovaps vmovups vmovdqa vmovdqu vlddqu", "x,m128 y,m256"),
    ("vmovaps vmovups vmovapd vmovupd vmovdqa vmovdqu vmovntps vmovntdq", "m128,x m256,y"),
    ("vpsllw vpslld vpsrlq vpsraw vpsrlw vpsrld vpsrad vpsllq", "x,x,m128 y,y,m128 x,x,i8 y,y,i8"),
    ("vpextrw", "r32,x,i8"),
    ("vmovhlps vmovlhps", "x,x,x"),
    ("vpslldq vpsrldq", "x,x,i8 y,y,i8"),
    ("vphminposuw vaesimc", "x,m128"),
    ("vaesenc vaesenclast vaesdec vaesdeclast vgf2p8mulb vpclmulqdq-i8", "x,x,m128 y,y,m256"),
    ("vcvtpd2ps vcvtpd2dq vcvttpd2dq", "x,m128 x,m256"),
    ("vcvtps2pd vcvtdq2pd vcvtph2ps", "x,m64 y,m128"),
    ("vcvtps2ph", "m64,x,i8 m128,y,i8"),
    ("vaddss vsubss vmulss vdivss vsqrtss vmaxss vminss vcvtss2sd vrcpss vrsqrtss", "x,x,m32"),
    ("vaddsd vsubsd vmulsd vdivsd vsqrtsd vmaxsd vminsd vcvtsd2ss", "x,x,m64"),
    ("vcomiss vucomiss", "x,m32"),
    ("vcomisd vucomisd", "x,m64"),
    ("vmovss vbroadcastss vpbroadcastd", "x,m32"),
    ("vmovss", "m32,x"),
    ("vmovsd vmovq", "x,m64 m64,x"),
    ("vmovd", "x,m32 m32,x"),
    ("vmovddup", "x,m64 y,m256"),
    ("vbroadcastss vpbroadcastd", "y,m32"),
    ("vbroadcastsd vpbroadcastq", "y,m64"),
    ("vpbroadcastb", "x,m8 y,m8"),
    ("vpbroadcastw", "x,m16 y,m16"),
    ("vbroadcastf128 vbroadcasti128", "y,m128"),
    ("vinsertf128 vinserti128", "y,y,m128,i8"),
    ("vextractf128 vextracti128", "m128,y,i8"),
    ("vperm2f128 vperm2i128", "y,y,m256,i8"),
    ("vpermd vpermps vpsllvd vpsrlvq vpsravd vpblendd-i8", "y,y,m256"),
    ("vpermq vpermpd vpermilps vpermilpd", "y,m256,i8"),
    ("vpermilps vpermilpd", "x,x,m128"),
    ("vmaskmovps vmaskmovpd vpmaskmovd vpmaskmovq", "x,x,m128 y,y,m256 m128,x,x m256,y,y"),
    ("vpmovsxbw vpmovzxwd vpmovsxdq", "x,m64 y,m128"),
    ("vpmovzxbd vpmovsxwq", "x,m32 y,m64"),
    ("vpmovsxbq vpmovzxbq", "x,m16 y,m32"),
    ("vpgatherdd vgatherdps", "x,vx4,x y,vy4,y"),
    ("vpgatherqq vgatherqpd", "x,vx8,x y,vy8,y"),
    ("vpgatherdq vgatherdpd", "x,vx8,x y,vx8,y"),
    ("vpgatherqd vgatherqps", "x,vx4,x x,vy4,x"),
    ("vpextrb", "m8,x,i8"),
    ("vpextrw", "m16,x,i8"),
    ("vpextrd vextractps", "m32,x,i8"),
    ("vpinsrb", "x,x,m8,i8"),
    ("vpinsrw", "x,x,m16,i8"),
    ("vpinsrd vinsertps", "x,x,m32,i8"),
    ("vpinsrq", "x,x,m64,i8", ONLY64),
    ("vpextrq", "m64,x,i8", ONLY64),
    ("vcvtsi2ss vcvtsi2sd", "x,x,m32"),
    ("vcvtss2si vcvttss2si", "r32,m32"),
    ("vcvtsd2si", "r32,m64"),
    ("vldmxcsr vstmxcsr", "m32"),
    ("vzeroupper vzeroall", "_"),
    ("vblendvps vblendvpd vpblendvb", "x,x,m128,x y,y,m256,y"),
    (_FMA, "x,x,m128 y,y,m256"),
    (_FMA_S, "x,x,m32"),
    ("vfmsub132ss vfnmadd213ss vfnmsub231ss", "x,x,m32"),
    ("vfmsub213sd vfnmadd132sd vfnmsub213sd vfmsub231sd", "x,x,m64"),
    ("vfmadd231sd vfnmadd213sd", "x,x,m64"),
    ("{vex}-vpdpbusd {vex}-vpdpwssd vpdpbssd vpdpbuud vpdpbsud vpdpbsuds", "x,x,m128 y,y,m256"),
    ("vcvtneobf162ps vcvtneeph2ps", "x,m128"),
    ("tdpbusd tdpbsud tdpbuud tdpfp16ps", "tmm0,tmm1,tmm2", ONLY64),
    ("vpmadd52luq-{vex}", "x,x,m128"),
    ("vcvtneps2bf16-{vex}", "x,m128 x,m256"),
    ("vbcstnebf162ps vbcstnesh2ps", "x,m16 y,m16"),
    ("vcvtneebf162ps vcvtneoph2ps", "x,m128 y,m256"),
    (_FMA4, "x,x,m128,x x,x,x,m128 y,y,m256,y"),
    ("vfmaddss vfnmsubss vfmsubss vfnmaddss", "x,x,m32,x x,x,x,m32"),
    ("vfmaddsd vfmsubsd vfnmaddsd vfnmsubsd", "x,x,m64,x"),
    ("vpermil2ps", "x,x,m128,x,0x3 y,y,y,m256,0x1"),
    ("vpcmov", "x,x,m128,x y,y,m256,y x,x,x,m128"),
    ("vpperm", "x,x,m128,x x,x,x,m128"),
    ("vprotb vprotw vprotd vprotq vpshlb vpshlw vpshld vpshlq vpshab vpshaw vpshad vpshaq", "x,m128,x x,x,m128"),
    ("vprotb vprotw vprotd vprotq", "x,m128,i8"),
    ("vpcomb vpcomw vpcomd vpcomq vpcomub vpcomuw vpcomud vpcomuq", "x,x,m128,i8"),
    ("vpmacssww vpmacsswd vpmacssdql vpmacssdd vpmacssdqh vpmacsww vpmacswd vpmacsdql vpmacsdd vpmacsdqh "
     "vpmadcsswd vpmadcswd", "x,x,m128,x"),
    ("vfrczps vfrczpd", "x,m128 y,m256"),
    ("vfrczss", "x,m32"),
    ("vfrczsd", "x,m64"),
    ("vphaddbw vphaddbd vphaddbq vphaddwd vphaddwq vphadddq vphaddubw vphaddubd vphaddubq vphadduwd "
     "vphadduwq vphaddudq vphsubbw vphsubwd vphsubdq", "x,m128"),
    ("kmovw kmovb kmovd", "k,r32 r32,k"),
    ("kmovw", "k,m16 m16,k"),
    ("kmovb", "k,m8 m8,k"),
    ("kmovd", "k,m32 m32,k"),
    ("kortestb", "k,k"),
    ("kaddw", "k,k,k"),
    ("kmovq", "k,m64 m64,k", ONLY64),
    ("kandw korw kxnorb kaddd kunpckbw", "k,k,k"),
    ("knotw kortestw ktestq", "k,k"),
    ("kshiftlw kshiftrq", "k,k,i8"),
]

# -- AVX-512 (F, CD, ER, PF, BW, DQ, VL, IFMA, VBMI, VBMI2, VNNI, BITALG, VPOPCNTDQ, 4FMAPS, 4VNNIW,
#    VP2INTERSECT, BF16, FP16, GFNI, VAES, VPCLMULQDQ): masking, broadcast and disp8*N ----------------
_E_PS = ("vaddps vsubps vmulps vdivps vminps vmaxps vandps vxorps vunpcklps vscalefps vpermi2ps vpermt2ps "
         "vblendmps vfmadd132ps vfnmsub231ps vshufps-i8 vrangeps-i8 vfixupimmps-i8")
_E_PD = ("vaddpd vmulpd vandnpd vunpckhpd vscalefpd vpermt2pd vblendmpd vfmsub213pd vshufpd-i8 vrangepd-i8")
_E_D = ("vpaddd vpsubd vpmulld vpandd vpord vpxord vpandnd vpmaxsd vpminud vprolvd vprorvd vpsllvd vpsravd "
        "vpermi2d vpermt2d vpblendmd vpunpckldq vpackssdw vpackusdw vpdpbusd vpdpwssds vpshldvd "
        "vpternlogd-i8 valignd-i8 vpshldd-i8 vpconflictd-2 vplzcntd-2 vpopcntd-2 "
        "vpabsd-2 vpshufd-2i8 vprold-2i8 vpsrld-2i8 vpslld-2i8 vpsrad-2i8")
_E_Q = ("vpaddq vpsubq vpmullq vpandq vporq vpxorq vpmaxuq vpminsq vprolvq vpsllvq vpsravq vpermi2q "
        "vpermt2q vpblendmq vpunpckhqdq vpmuldq vpmuludq vpmadd52luq vpmadd52huq vpmultishiftqb vpshrdvq "
        "vpternlogq-i8 valignq-i8 vpshrdq-i8 vgf2p8affineqb-i8 vpconflictq-2 "
        "vplzcntq-2 vpopcntq-2 vpabsq-2 vpsraq-2i8 vprorq-2i8 vpsrlq-2i8")
_E_BW = ("vpaddb vpaddw vpsubsb vpsubusw vpmullw vpmulhrsw vpmaddwd vpmaddubsw vpavgb vpavgw vpmaxsb vpminuw "
         "vpshufb vpacksswb vpackuswb vpunpcklbw vpunpckhwd vpermb vpermw vpermi2b vpermt2w vpsllvw "
         "vpsrlvw vpsravw vpblendmb vpblendmw vpshldvw vpshrdvw vpmultishiftqb vgf2p8mulb "
        "vdbpsadbw-i8 vpalignr-i8 vpshldw-i8 vpshrdw-i8 vpopcntb-2 vpopcntw-2 vpabsb-2 "
         "vpabsw-2 vpshufhw-2i8 vpshuflw-2i8 vpsrlw-2i8 vpsraw-2i8 vpsllw-2i8")
_E_PH = ("vaddph vsubph vmulph vdivph vminph vmaxph vscalefph vfmadd132ph vfnmsub231ph vfmaddsub213ph "
         "vfmsub132ph vfmsub213ph vfmsub231ph vfnmadd132ph vfnmadd213ph vfnmadd231ph vfnmsub132ph vfnmsub213ph "
         "vfmadd213ph vfmadd231ph vfmsubadd231ph "
         "vsqrtph-2 vrcpph-2 vrsqrtph-2 vgetexpph-2 vcvtph2w-2 vcvtw2ph-2 vcvtph2uw-2 vcvttph2w-2 "
         "vrndscaleph-2i8 vreduceph-2i8 vgetmantph-2i8")
_E_SS = ("vaddss vsqrtss vfmadd213ss vrcp14ss vrsqrt14ss vgetexpss vscalefss vrndscaless-i8 vrangess-i8 "
         "vreducess-i8 vfixupimmss-i8 vgetmantss-i8 vcvtss2sd vfmaddcsh vfmulcsh vfcmaddcsh")
_E_SD = "vaddsd vmulsd vfnmadd231sd vrcp14sd vgetexpsd vscalefsd vrangesd-i8 vcvtsd2ss vcvtsd2sh"
_E_SH = ("vaddsh vsubsh vmulsh vdivsh vminsh vmaxsh vsqrtsh vscalefsh vgetexpsh vrcpsh vrsqrtsh vfmadd132sh "
         "vfmadd231sh vfmsub132sh vfmsub213sh vfmsub231sh vfnmadd132sh vfnmadd213sh vfnmadd231sh vfnmsub132sh "
         "vfnmsub213sh vfnmsub231sh "
         "vcvtsh2ss vcvtsh2sd vrndscalesh-i8 vreducesh-i8 vgetmantsh-i8")

AVX512 = [
    (_E_PS, "z,z,m512 z{kz},z,b32 y{k},y,m256 x,x,b32 z,z,m512d8"),
    (_E_PD, "z,z,m512 z{k},z,b64 y,y,b64 x{kz},x,m128"),
    (_E_D, "z,z,m512 z{k},z,b32 y,y,b32 x,x,m128d8"),
    (_E_Q, "z,z,m512 z{kz},z,b64 y,y,m256d8 x,x,b64"),
    (_E_BW, "z,z,m512 y{k},y,m256 x{kz},x,m128d8"),
    ("vaesenc vaesdeclast vpclmulqdq-i8 vpsadbw vpsrldq-2i8 vpslldq-2i8", "z,z,m512 y,y,m256 x,x,m128d8"),
    (_E_PH, "z,z,m512 z{k},z,b16 y,y,b16 x,x,m128d8"),
    (_E_SS, "x{k},x,m32 x,x,m32d8"),
    (_E_SD, "x{kz},x,m64 x,x,m64d8"),
    (_E_SH, "x{k},x,m16 x,x,m16d8"),
    ("vpcmpd-i8 vpcmpeqd vpcmpgtd vptestmd vptestnmd vcmpps-i8 vfpclassps-2i8", "k{k},z,m512 k,z,b32 k,y,b32"),
    ("vpcmpuq-i8 vpcmpeqq vptestmq vcmppd-i8 vfpclasspd-2i8", "k,z,m512 k{k},z,b64 k,x,m128"),
    ("vp2intersectq vp2intersectd", "k,z,m512 k,y,m256d8"),
    ("vpcmpb-i8 vpcmpeqw vptestmb vptestnmw vpshufbitqmb", "k,z,m512 k{k},y,m256"),
    ("vcmpph-i8 vfpclassph-2i8", "k,z,m512 k,z,b16"),
    ("vcmpss-i8 vfpclassss-2i8", "k,x,m32"),
    ("vcomish vucomish", "x,m16"),
    ("vmovaps vmovups vmovdqa32 vmovdqu8 vmovdqu16 vmovdqu64", "z{kz},m512 m512{k},z y{k},m256 m128,x"),
    ("vmovntps vmovntdq", "m512,z"),
    ("vmovntdqa", "z,m512"),
    ("vcompressps vpcompressd vpcompressq vcompresspd vpcompressb vpcompressw",
     "m512{k},z m256,y m128{k},x m512d8,z"),
    ("vexpandps vpexpandd vexpandpd vpexpandq vpexpandb vpexpandw", "z{kz},m512 y,m256 z,m512d8"),
    ("vgatherdps vpgatherdd", "z{k},vz4"),
    ("vgatherdpd vpgatherdq", "z{k},vy8"),
    ("vgatherqps vpgatherqd", "y{k},vz4"),
    ("vgatherqpd vpgatherqq", "z{k},vz8 y{k},vy8"),
    ("vscatterdps vpscatterdd", "vz4{k},z"),
    ("vscatterqpd vpscatterqq", "vz8{k},z"),
    ("vgatherpf0dps vgatherpf1dps vscatterpf0dps vscatterpf1dps", "vz4{k}"),
    ("vgatherpf0qpd vscatterpf1qpd", "vz8{k}"),
    ("vextractf32x4 vextracti32x4 vextractf64x2 vextracti64x2", "m128{k},z,i8 m128,y,i8"),
    ("vextractf32x8 vextracti64x4", "m256{k},z,i8"),
    ("vinsertf32x4 vinserti64x2", "z{k},z,m128,i8 y,y,m128,i8"),
    ("vinsertf64x4 vinserti32x8", "z,z,m256,i8"),
    ("vbroadcastf32x4 vbroadcasti64x2", "z{k},m128 y,m128"),
    ("vbroadcastf64x4 vbroadcasti32x8", "z,m256"),
    ("vbroadcastf32x2 vbroadcasti32x2", "z,m64"),
    ("vbroadcastss vpbroadcastd", "z{k},m32 z,m32d8"),
    ("vbroadcastsd vpbroadcastq", "z,m64 y{kz},m64"),
    ("vpbroadcastb", "z,m8"),
    ("vpbroadcastw", "z,m16"),
    ("vpmovqb vpmovsqb vpmovusqb", "m64{k},z m32,y m16,x"),
    ("vpmovdb vpmovqw vpmovsdb vpmovusqw", "m128{k},z m64,y"),
    ("vpmovwb vpmovdw vpmovqd vpmovswb vpmovusdw vpmovsqd", "m256{k},z m128,y m64,x"),
    ("vpmovzxbw vpmovsxwd vpmovzxdq", "z{k},m256 y,m128"),
    ("vpmovzxbd vpmovsxwq", "z,m128"),
    ("vpmovsxbq vpmovzxbq", "z,m64 x,m16"),
    ("vcvtps2pd vcvtdq2pd vcvtudq2pd vcvtps2qq vcvttps2uqq", "z{k},m256 z,b32 y,b32"),
    ("vcvtpd2ps vcvtpd2dq vcvtqq2ps vcvtuqq2ps vcvttpd2udq", "y{k},m512 y,b64"),
    ("vcvtqq2pd vcvtuqq2pd vcvtpd2qq vcvttpd2uqq", "z,m512 z,b64"),
    ("vcvtdq2ps vcvtudq2ps vcvtps2udq vcvttps2dq", "z,m512 z,b32"),
    ("vcvtph2ps", "z{k},m256"),
    ("vcvtps2ph", "m256{k},z,i8"),
    ("vcvtph2psx vcvtph2dq vcvttph2udq", "z,m256 z,b16"),
    ("vcvtph2pd vcvtph2qq vcvttph2uqq", "z,m128 z,b16"),
    ("vcvtps2phx vcvtdq2ph vcvtudq2ph", "y,m512 y,b32"),
    ("vcvtpd2ph vcvtqq2ph", "x,m512 x,b64"),
    ("vfmaddcph vfcmulcph vfcmaddcph vfmulcph", "z,z,m512 z,z,b32"),
    ("vfcmulcsh vcvtss2sh", "x,x,m32"),
    ("vcvttph2dq", "z,m256 z,b16"),
    ("vcvtuqq2ph", "x,m512 x,b64"),
    ("vcvtuw2ph", "z,m512 z,b16"),
    ("vcvtusi2sh vcvtusi2ss", "x,x,m32"),
    ("vcmpsh-i8 vfpclasssh-2i8", "k,x,m16"),
    ("vcvtne2ps2bf16 vdpbf16ps", "z,z,m512 z,z,b32"),
    ("vcvtneps2bf16", "y,m512 y,b32"),
    ("vcvtsi2ss vcvtusi2sd vcvtsi2sh", "x,x,m32"),
    ("vcvtss2usi", "r32,m32"),
    ("vcvttsd2usi", "r32,m64"),
    ("vcvtsh2si vcvttsh2usi", "r32,m16"),
    ("vexp2ps vrcp28ps", "z,m512 z{k},b32"),
    ("vrsqrt28pd", "z,m512 z{k},b64"),
    ("vrcp28ss", "x,x,m32d8"),
    ("vrsqrt28sd", "x,x,m64d8"),
    ("v4fmaddps v4fnmaddps vp4dpwssd vp4dpwssds", "z,z+3,m128"),
    ("v4fmaddss v4fnmaddss", "x,x+3,m128"),
    ("vmovsh", "x{k},m16 m16,x"),
    ("vcvttps2udq", "z,m512 z,b32"),
    ("vcvtps2uqq vcvttps2qq", "z,m256 z,b32"),
    ("vcvtpd2udq", "y,m512 y,b64"),
    ("vcvttpd2qq vcvtpd2uqq", "z,m512 z,b64"),
    ("vcvtsd2usi", "r32,m64"),
    ("vcvttss2usi", "r32,m32"),
    ("vpermilps", "z,z,m512 z,z,b32"),
    ("vgetexpps vrcp14ps vrsqrt14ps", "z,m512 z,b32"),
    ("vpermilpd", "z,z,m512 z,z,b64"),
    ("vgetexppd vrcp14pd", "z,m512 z,b64"),
    ("vgetmantps vreduceps", "z,m512,i8 z,b32,i8"),
    ("vpbroadcastb vpbroadcastw vpbroadcastd", "z,eax"),
    ("vpmovuswb vpmovsdw", "m256,z"),
    ("vpmovusdb vpmovsqw", "m128,z"),
    ("vpmovusqd", "m256,z"),
    ("vgatherpf1qpd vscatterpf0qpd", "vz8{k}"),
    ("vpermd vpermps vshuff32x4-i8 vshufi32x4-i8", "z,z,m512 z{k},z,b32 y,y,m256"),
    ("vpermq vpermpd vshuff64x2-i8 vshufi64x2-i8", "z,z,m512 z{k},z,b64 y,y,b64"),
    ("vmovw", "x,m16 m16,x"),
    ("vpbroadcastmb2q vpbroadcastmw2d", "z,k"),
    ("vpmovm2d vpmovm2b", "z,k"),
    ("vpmovd2m vpmovb2m", "k,z"),
]

GROUPS = {"gpr": GPR, "system": SYSTEM, "x87": X87, "sse": SSE, "avx": AVX, "avx512": AVX512}

# -- operands of each mode ------------------------------------------------------------------
_REGISTERS = {
    16: {"r8": ["al", "cl", "dh", "bl"], "r16": ["ax", "cx", "si", "bp"], "r32": ["eax", "edx", "edi"],
         "e_ax": ["eax"]},
    32: {"r8": ["al", "cl", "dh", "bl"], "r16": ["ax", "cx", "si", "bp"], "r32": ["eax", "edx", "edi", "esp"],
         "e_ax": ["eax"]},
    64: {"r8": ["al", "cl", "sil", "r9b"], "r16": ["ax", "cx", "r10w", "bp"],
         "r32": ["eax", "edx", "r11d", "esp"], "r64": ["rax", "r9", "rsp", "r15"], "e_ax": ["rax"]},
}
_ADDRESSES = {
    16: ["[bx+si]", "[bp+di+0x10]", "[si]", "[di-0x2]", "[bp+0x100]", "ds:0x1234", "[eax+ebx*2]", "es:[bx]",
         "[bp]", "[bx+di-0x7e]", "ss:[si+0x4000]", "[esp+0x8]"],
    32: ["[eax]", "[esp+0x4]", "[ebp-0x8]", "[ebx+esi*4+0x1000]", "ds:0x1234", "es:[edi]", "[bx+si]",
         "[ecx*2+0x10]", "ss:[eax+0x7f]", "[ebp+edx*8-0x80]", "fs:[esi+0x12345678]", "[bp+di]"],
    64: ["[rax]", "[rsp+0x8]", "[rbp-0x80]", "[r12+r13*8+0x12345]", "[rip+0x100]", "fs:[rbx+rcx*2]",
         "[eax+ebx*4+0x10]", "[rbx*8+0x40]", "[r15+0x7f]", "gs:[rsi-0x4]", "[r13]", "[rsp+r12*1-0x1000]"],
}
# Displacements that are multiples of the EVEX disp8 scale for every element and vector size
# (compressed disp8) and ones that are not (disp32).
_DISP8N = {16: ["[bx+si+0x40]", "[bp-0x80]", "[di+0x44]"], 32: ["[eax+0x40]", "[ebp-0x1000]", "[edx+0x44]"],
           64: ["[rax+0x40]", "[r14-0x1000]", "[rdx+rcx*2+0x44]", "[rip+0x40]"]}
_VECTORS = {"mm": ["mm1", "mm7"], "x": ["xmm1", "xmm6"], "y": ["ymm2", "ymm7"], "z": ["zmm3", "zmm4"],
            "k": ["k2", "k5"], "t": ["tmm1", "tmm3"], "st": ["st(1)", "st(3)"]}
_VECTORS64 = {"x": ["xmm9", "xmm17"], "y": ["ymm12", "ymm25"], "z": ["zmm20", "zmm31"]}  # xmm16+: EVEX only
_KEYWORDS = {"m8": "BYTE", "m16": "WORD", "m32": "DWORD", "m48": "FWORD", "m64": "QWORD", "m80": "TBYTE",
             "m128": "XMMWORD", "m256": "YMMWORD", "m512": "ZMMWORD"}
_BROADCASTS = {"b16": ("WORD", 2), "b32": ("DWORD", 4), "b64": ("QWORD", 8)}
_VECTOR_BYTES = {"x": 16, "y": 32, "z": 64}


class _Cycle:
    """Hands out each list's entries in turn."""

    def __init__(self):
        self.positions = {}

    def next(self, key, values):
        position = self.positions.get(key, 0)
        self.positions[key] = position + 1
        return values[position % len(values)]


def _operand_sizes(bits):
    return {16: (16, 32), 32: (16, 32), 64: (16, 32, 64)}[bits]


def generate(bits, groups=tuple(GROUPS)):
    """Assembler text for `bits`-bit code: one instruction per line (after the directives)."""
    cycle = _Cycle()
    lines = [".intel_syntax noprefix", f".code{bits}"]
    label = 0
    for group in groups:
        for entry in GROUPS[group]:
            mnemonics, forms = entry[0], entry[1]
            modes = entry[2] if len(entry) > 2 else ALL
            if bits not in modes:
                continue
            for name in (mnemonics.split("|") if "|" in mnemonics else mnemonics.split()):
                for form in forms.split():
                    for text in _expand(name, form, bits, cycle, evex=group == "avx512"):
                        lines.append(text)
                        if "label" in text:
                            lines[-1] = text.replace("farlabel", f"1{label}f").replace("label", f"1{label}f")
                            if "farlabel" in text:          # at least 130 bytes: beyond a rel8
                                lines += ["mov eax,0x12345678"] * 26
                            lines.append(f"1{label}:")
                            label += 1
    return "\n".join(lines) + "\n"


def _split_name(name):
    """'vpsrld-2i8' -> ('vpsrld', drop the first source, add an imm8); '{vex}-vpdpbusd' keeps the prefix."""
    prefix = ""
    if name.startswith("{"):
        prefix, name = name.split("-", 1)
        prefix += " "
    name, _, options = name.partition("-")
    if options.startswith("{"):
        prefix, options = options + " ", ""
    return prefix + name, options


def _expand(name, form, bits, cycle, evex):
    name, options = _split_name(name)
    sizes = _operand_sizes(bits) if "v" in form.replace("vx", "").replace("vy", "").replace("vz", "") else (None,)
    for size in sizes:
        operands = [] if form == "_" else form.split(",")
        if options.startswith("2"):                  # one source fewer (unary vector forms)
            operands = [operands[0]] + operands[2:]
        if options.endswith("i8"):
            operands.append("i8")
        if size == 32 and bits == 64 and name in ("push", "pop", "call", "jmp") and "mv" in operands:
            continue                                 # no 32-bit stack operands in 64-bit mode
        if size == 64 and name in ("push", "pop", "call", "jmp") and "mfar" in operands:
            continue
        text = [_operand(operand, size, bits, cycle, name, evex) for operand in operands]
        if None in text:
            continue
        yield f"{name} {','.join(text)}".strip()


def _operand(operand, size, bits, cycle, name, evex):
    if operand in ("rv", "mv", "iv"):
        operand = {"rv": f"r{size}", "mv": f"m{size}", "iv": "i16" if size == 16 else "i32"}[operand]
    if operand == "mfar":
        return f"{'DWORD' if size == 16 else 'FWORD'} PTR {cycle.next(('m', bits), _ADDRESSES[bits])}"
    if operand in _REGISTERS[bits] or operand in ("r64",):
        registers = _REGISTERS[bits].get(operand)
        return None if registers is None else cycle.next((operand, bits), registers)
    mask = ""
    if "{" in operand:
        operand, _, mask = operand.partition("{")
        mask = "{k1}" + ("{z}" if mask.startswith("kz") else "")
    if operand.startswith("m") and (operand[1:].isdigit() or operand[1:-2].isdigit() or operand == "m"
                                    or operand.endswith("-scalar")):
        operand = operand.replace("-scalar", "")
        pool = _DISP8N[bits] if operand.endswith("d8") else _ADDRESSES[bits]
        operand = operand.removesuffix("d8")
        address = cycle.next(("m", bits, pool is _DISP8N[bits]), pool)
        keyword = _KEYWORDS.get(operand)
        return (f"{keyword} PTR {address}" if keyword else address) + mask
    if operand in _BROADCASTS:
        keyword, element = _BROADCASTS[operand]
        address = cycle.next(("b", bits), _DISP8N[bits])
        return f"{keyword} BCST {address}"
    if operand[:2] in ("vx", "vy", "vz"):
        register = {"vx": "xmm5", "vy": "ymm5", "vz": "zmm5"}[operand[:2]]
        base = {16: "esi", 32: "esi", 64: "r8"}[bits]
        forms = [f"[{base}+{register}*{operand[2:]}]", f"[{base}+{register}*{operand[2:]}+0x40]"]
        if bits != 16:
            forms.append(f"[{register}*{operand[2:]}+0x1234]")
        address = cycle.next(("vsib", bits), forms)
        return address + mask
    if operand in ("i8", "i16", "i32"):
        return cycle.next((operand,), {"i8": ["0x7", "0x7f"], "i16": ["0x1234", "0x10"],
                                       "i32": ["0x12345678", "0x100"]}[operand])
    if operand == "moff":
        return cycle.next(("moff", bits), {16: ["ds:0x1234"], 32: ["ds:0x12345678", "es:0x10"],
                                           64: ["ds:0x1122334455667788", "fs:0x10"]}[bits])
    base, plus, count = operand.partition("+")
    if base in _VECTORS:
        high = evex and bits == 64 and not name.startswith("v4")
        choices = _VECTORS[base] + (_VECTORS64.get(base, []) if high else [])
        register = cycle.next((base, bits), choices)
        if plus:                                     # a register block: zmm4+3
            register = {"x": "xmm4", "z": "zmm4"}[base]
        return register + mask
    return operand.replace("-", " ").replace("DI", {16: "di", 32: "edi", 64: "rdi"}[bits]).replace(
        "SI", {16: "si", 32: "esi", 64: "rsi"}[bits])


_LISTING_FIRST = re.compile(r"^\s*(\d+) ([0-9a-f]{4,}) ([0-9A-F]+)\s*(?:\t(.*))?$")
_LISTING_MORE = re.compile(r"^\s*(\d+)\s+([0-9A-F]+)\s*$")


def assemble(source, directory, name, listing=True):
    """Assemble `source` with GNU as; (object path, [(address, bytes, source text)] per
    source line that emitted bytes, from the assembler's listing, or [] without it)."""
    directory = pathlib.Path(directory)
    source_path, object_path, listing_path = (directory / f"{name}{suffix}" for suffix in (".s", ".o", ".lst"))
    source_path.write_text(source)
    options = [f"-aln={listing_path}"] if listing else []
    subprocess.run(["as", "--64", *options, "-o", str(object_path), str(source_path)], check=True,
                   capture_output=True)
    if not listing:
        return object_path, []
    rows = {}
    for text in listing_path.read_text().splitlines():
        first = _LISTING_FIRST.match(text)
        if first:
            rows[int(first[1])] = [int(first[2], 16), bytearray.fromhex(first[3]), first[4] or ""]
            continue
        more = _LISTING_MORE.match(text)
        if more and int(more[1]) in rows:
            rows[int(more[1])][1] += bytes.fromhex(more[2])
    return object_path, [(address, bytes(code), text) for address, code, text in rows.values()]


def _sweep_entries():
    disp8, filler = 0x01, bytes((0x02, 0x03, 0x04, 0x05))     # disp8, then imm8/imm32 if wanted
    for prefix in (b"", b"\x66", b"\xf3", b"\xf2"):
        for escape in (b"\x0f", b"\x0f\x38", b"\x0f\x3a"):
            for opcode in range(256):
                for modrm in (0x48, 0xC1, 0x78):
                    yield prefix + escape + bytes((opcode, modrm, disp8)) + filler[:1]
    for opcode in range(256):
        for modrm in (0x48, 0xC1, 0x78):
            yield bytes((opcode, modrm, disp8)) + filler[:2]
    for opcode_map in (1, 2, 3):                                # VEX3: W, L, pp
        for payload in range(0x78, 0x80):
            for w in (0, 0x80):
                for opcode in range(256):
                    for modrm in (0x48, 0xC1):
                        yield bytes((0xC4, 0xE0 | opcode_map, w | payload, opcode, modrm, disp8)) + filler[:1]
    for opcode_map in (1, 2, 3, 5, 6):                          # EVEX: pp, W, vector length, broadcast
        for pp in range(4):
            for w in (0, 0x80):
                for options in (0x48, 0x58, 0x08, 0x28, 0x18):
                    for opcode in range(256):
                        for modrm in ((0x48, 0xC1) if options in (0x48, 0x18) else (0x48,)):
                            yield bytes((0x62, 0xF0 | opcode_map, w | 0x7C | pp, options, opcode, modrm,
                                         disp8)) + filler[:1]
    for opcode_map in (8, 9, 10):                               # XOP: W, L
        for payload in (0x78, 0x7C, 0xF8, 0xFC):
            for opcode in range(256):
                for modrm in (0x48, 0xC1):
                    yield bytes((0x8F, 0xE0 | opcode_map, payload, opcode, modrm, disp8)) + filler


def opcode_sweep(bits):
    """Assembler text: each swept encoding as .byte data under its own label."""
    lines = [f".code{bits}"]
    for number, code in enumerate(_sweep_entries()):
        lines.append(f"sweep{number}: .byte {','.join(str(byte) for byte in code)}")
    return "\n".join(lines) + "\n"
