/*
 * test_unpickle.c - pk_loads: refusals first (calls outside the allow-list,
 * unsupported opcodes and numpy features), then every opcode of protocols 0-5
 * on pickles CPython and numpy wrote (embedded below; regenerate them with
 * tests/fuzz/make_corpus.py --c), shared references and cycles, out-of-band
 * buffers, Python 2 strings, every error path with its offset and opcode,
 * truncation at every offset, the limits, and allocation-failure injection
 * with leak accounting.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "lib/faultsim.h"

#include "picklepool/pickle.h"

/* A pickle literal and its length (the literals below are C strings). */
#define P(s) (s), (sizeof(s) - 1)

/* ---- pickles written by CPython 3.11 / numpy 1.24 (make_corpus.py --c) --- */

/* rich(), protocol 0 */
static const char rich_p0[] =
    "(lp0\012NaI01\012aI00\012aI0\012aI1\012aI255\012aI256\012aI65535\012aI65"
    "536\012aI-1\012aI-2147483648\012aI2147483647\012aL2147483648L\012aL92233"
    "72036854775808L\012aL-9223372036854775809L\012aL126765060022822940149670"
    "3205376L\012aF1.5\012aF-0.0\012aVabc\012p1\012aV\351\134u20ac\134U0001f6"
    "00\012p2\012aV\134ud800\012p3\012ac_codecs\012encode\012p4\012(Vxy\012p5"
    "\012Vlatin1\012p6\012tp7\012Rp8\012ac__builtin__\012bytes\012p9\012(tRp1"
    "0\012ac__builtin__\012bytearray\012p11\012(g4\012(Vab\012p12\012g6\012tp"
    "13\012Rp14\012tp15\012Rp16\012a(ta(I1\012tp17\012a(I1\012I2\012tp18\012a"
    "(I1\012I2\012I3\012tp19\012a(I1\012I2\012I3\012I4\012tp20\012a(lp21\012a"
    "(dp22\012a(dp23\012Va\012p24\012I1\012sI2\012Vb\012p25\012sac__builtin__"
    "\012set\012p26\012((lp27\012I1\012aI2\012atp28\012Rp29\012ac__builtin__"
    "\012frozenset\012p30\012((lp31\012I3\012atp32\012Rp33\012ac__builtin__"
    "\012complex\012p34\012(F1.0\012F2.0\012tp35\012Rp36\012a(lp37\012I7\012a"
    "Vshared\012p38\012aag37\012aVxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    "\012p39\012ag4\012(Vyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"
    "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"
    "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"
    "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\012p40\012g"
    "6\012tp41\012Rp42\012ag30\012((lp43\012I0\012aI1\012aI2\012aI3\012aI4"
    "\012atp44\012Rp45\012aL3231700607131100730071487668866995196044410266971"
    "548403213034542752465513886789089319720141152291346368871796092189801949"
    "411955915049092109508815238644828312063087736730099609175019775038965210"
    "679605763838406756827679221864261975616183809433847617047058164585203630"
    "504288757589154106580860755239912393038552191433338966834242068497478656"
    "456949485617603532632205807780565933102619270846031415025859286417711672"
    "594360371846185735759835115230164590440369761323328723122712568471082020"
    "972515710172693132346967854258065669793504599726835299863821552516638943"
    "7335543602135433229604645318478604952148193555853611059596230656L\012a.";
/* rich(), protocol 1 */
static const char rich_p1[] =
    "]q\000(NI01\012I00\012K\000K\001K\377M\000\001M\377\377J\000\000\001\000"
    "J\377\377\377\377J\000\000\000\200J\377\377\377\177L2147483648L\012L9223"
    "372036854775808L\012L-9223372036854775809L\012L1267650600228229401496703"
    "205376L\012G\077\370\000\000\000\000\000\000G\200\000\000\000\000\000"
    "\000\000X\003\000\000\000abcq\001X\011\000\000\000\303\251\342\202\254"
    "\360\237\230\200q\002X\003\000\000\000\355\240\200q\003c_codecs\012encod"
    "e\012q\004(X\002\000\000\000xyq\005X\006\000\000\000latin1q\006tq\007Rq"
    "\010c__builtin__\012bytes\012q\011)Rq\012c__builtin__\012bytearray\012q"
    "\013(h\004(X\002\000\000\000abq\014h\006tq\015Rq\016tq\017Rq\020)(K\001t"
    "q\021(K\001K\002tq\022(K\001K\002K\003tq\023(K\001K\002K\003K\004tq\024]"
    "q\025}q\026}q\027(X\001\000\000\000aq\030K\001K\002X\001\000\000\000bq"
    "\031uc__builtin__\012set\012q\032(]q\033(K\001K\002etq\034Rq\035c__built"
    "in__\012frozenset\012q\036(]q\037K\003atq Rq!c__builtin__\012complex\012"
    "q\042(G\077\360\000\000\000\000\000\000G@\000\000\000\000\000\000\000tq#"
    "Rq$]q%(K\007X\006\000\000\000sharedq&eh%X\000\001\000\000xxxxxxxxxxxxxxx"
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    "xxxxxxxxxxxxxxxxxxxxxxxxxq'h\004(X\000\001\000\000yyyyyyyyyyyyyyyyyyyyyy"
    "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"
    "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"
    "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"
    "yyyyyyyyyyyyyyyyyyq(h\006tq)Rq*h\036(]q+(K\000K\001K\002K\003K\004etq,Rq"
    "-L3231700607131100730071487668866995196044410266971548403213034542752465"
    "513886789089319720141152291346368871796092189801949411955915049092109508"
    "815238644828312063087736730099609175019775038965210679605763838406756827"
    "679221864261975616183809433847617047058164585203630504288757589154106580"
    "860755239912393038552191433338966834242068497478656456949485617603532632"
    "205807780565933102619270846031415025859286417711672594360371846185735759"
    "835115230164590440369761323328723122712568471082020972515710172693132346"
    "967854258065669793504599726835299863821552516638943733554360213543322960"
    "4645318478604952148193555853611059596230656L\012e.";
/* rich(), protocol 2 */
static const char rich_p2[] =
    "\200\002]q\000(N\210\211K\000K\001K\377M\000\001M\377\377J\000\000\001"
    "\000J\377\377\377\377J\000\000\000\200J\377\377\377\177\212\005\000\000"
    "\000\200\000\212\011\000\000\000\000\000\000\000\200\000\212\011\377\377"
    "\377\377\377\377\377\177\377\212\015\000\000\000\000\000\000\000\000\000"
    "\000\000\000\020G\077\370\000\000\000\000\000\000G\200\000\000\000\000"
    "\000\000\000X\003\000\000\000abcq\001X\011\000\000\000\303\251\342\202"
    "\254\360\237\230\200q\002X\003\000\000\000\355\240\200q\003c_codecs\012e"
    "ncode\012q\004X\002\000\000\000xyq\005X\006\000\000\000latin1q\006\206q"
    "\007Rq\010c__builtin__\012bytes\012q\011)Rq\012c__builtin__\012bytearray"
    "\012q\013h\004X\002\000\000\000abq\014h\006\206q\015Rq\016\205q\017Rq"
    "\020)K\001\205q\021K\001K\002\206q\022K\001K\002K\003\207q\023(K\001K"
    "\002K\003K\004tq\024]q\025}q\026}q\027(X\001\000\000\000aq\030K\001K\002"
    "X\001\000\000\000bq\031uc__builtin__\012set\012q\032]q\033(K\001K\002e"
    "\205q\034Rq\035c__builtin__\012frozenset\012q\036]q\037K\003a\205q Rq!c_"
    "_builtin__\012complex\012q\042G\077\360\000\000\000\000\000\000G@\000"
    "\000\000\000\000\000\000\206q#Rq$]q%(K\007X\006\000\000\000sharedq&eh%X"
    "\000\001\000\000xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxq'h\004X\000\001"
    "\000\000yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"
    "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"
    "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"
    "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyq(h\006\206q)Rq*h\036]q+"
    "(K\000K\001K\002K\003K\004e\205q,Rq-\213\001\001\000\000\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000"
    "\001e.";
/* rich(), protocol 3 */
static const char rich_p3[] =
    "\200\003]q\000(N\210\211K\000K\001K\377M\000\001M\377\377J\000\000\001"
    "\000J\377\377\377\377J\000\000\000\200J\377\377\377\177\212\005\000\000"
    "\000\200\000\212\011\000\000\000\000\000\000\000\200\000\212\011\377\377"
    "\377\377\377\377\377\177\377\212\015\000\000\000\000\000\000\000\000\000"
    "\000\000\000\020G\077\370\000\000\000\000\000\000G\200\000\000\000\000"
    "\000\000\000X\003\000\000\000abcq\001X\011\000\000\000\303\251\342\202"
    "\254\360\237\230\200q\002X\003\000\000\000\355\240\200q\003C\002xyq\004C"
    "\000q\005cbuiltins\012bytearray\012q\006C\002abq\007\205q\010Rq\011)K"
    "\001\205q\012K\001K\002\206q\013K\001K\002K\003\207q\014(K\001K\002K\003"
    "K\004tq\015]q\016}q\017}q\020(X\001\000\000\000aq\021K\001K\002X\001\000"
    "\000\000bq\022ucbuiltins\012set\012q\023]q\024(K\001K\002e\205q\025Rq"
    "\026cbuiltins\012frozenset\012q\027]q\030K\003a\205q\031Rq\032cbuiltins"
    "\012complex\012q\033G\077\360\000\000\000\000\000\000G@\000\000\000\000"
    "\000\000\000\206q\034Rq\035]q\036(K\007X\006\000\000\000sharedq\037eh"
    "\036X\000\001\000\000xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxq B\000\001"
    "\000\000yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"
    "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"
    "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"
    "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyq!h\027]q\042(K\000K\001"
    "K\002K\003K\004e\205q#Rq$\213\001\001\000\000\000\000\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\001e.";
/* rich(), protocol 4 */
static const char rich_p4[] =
    "\200\004\225;\004\000\000\000\000\000\000]\224(N\210\211K\000K\001K\377M"
    "\000\001M\377\377J\000\000\001\000J\377\377\377\377J\000\000\000\200J"
    "\377\377\377\177\212\005\000\000\000\200\000\212\011\000\000\000\000\000"
    "\000\000\200\000\212\011\377\377\377\377\377\377\377\177\377\212\015\000"
    "\000\000\000\000\000\000\000\000\000\000\000\020G\077\370\000\000\000"
    "\000\000\000G\200\000\000\000\000\000\000\000\214\003abc\224\214\011\303"
    "\251\342\202\254\360\237\230\200\224\214\003\355\240\200\224C\002xy\224C"
    "\000\224\214\010builtins\224\214\011bytearray\224\223\224C\002ab\224\205"
    "\224R\224)K\001\205\224K\001K\002\206\224K\001K\002K\003\207\224(K\001K"
    "\002K\003K\004t\224]\224}\224}\224(\214\001a\224K\001K\002\214\001b\224u"
    "\217\224(K\001K\002\220(K\003\221\224h\006\214\007complex\224\223\224G"
    "\077\360\000\000\000\000\000\000G@\000\000\000\000\000\000\000\206\224R"
    "\224]\224(K\007\214\006shared\224eh\033X\000\001\000\000xxxxxxxxxxxxxxxx"
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    "xxxxxxxxxxxxxxxxxxxxxxxx\224B\000\001\000\000yyyyyyyyyyyyyyyyyyyyyyyyyyy"
    "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"
    "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"
    "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"
    "yyyyyyyyyyyyy\224(K\000K\001K\002K\003K\004\221\224\213\001\001\000\000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000"
    "\000\000\000\000\001e.";
/* rich(), protocol 5 */
static const char rich_p5[] =
    "\200\005\225.\004\000\000\000\000\000\000]\224(N\210\211K\000K\001K\377M"
    "\000\001M\377\377J\000\000\001\000J\377\377\377\377J\000\000\000\200J"
    "\377\377\377\177\212\005\000\000\000\200\000\212\011\000\000\000\000\000"
    "\000\000\200\000\212\011\377\377\377\377\377\377\377\177\377\212\015\000"
    "\000\000\000\000\000\000\000\000\000\000\000\020G\077\370\000\000\000"
    "\000\000\000G\200\000\000\000\000\000\000\000\214\003abc\224\214\011\303"
    "\251\342\202\254\360\237\230\200\224\214\003\355\240\200\224C\002xy\224C"
    "\000\224\226\002\000\000\000\000\000\000\000ab\224)K\001\205\224K\001K"
    "\002\206\224K\001K\002K\003\207\224(K\001K\002K\003K\004t\224]\224}\224}"
    "\224(\214\001a\224K\001K\002\214\001b\224u\217\224(K\001K\002\220(K\003"
    "\221\224\214\010builtins\224\214\007complex\224\223\224G\077\360\000\000"
    "\000\000\000\000G@\000\000\000\000\000\000\000\206\224R\224]\224(K\007"
    "\214\006shared\224eh\027X\000\001\000\000xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    "xxxxxxxxx\224B\000\001\000\000yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"
    "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"
    "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"
    "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"
    "\224(K\000K\001K\002K\003K\004\221\224\213\001\001\000\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000"
    "\000\001e.";
/* [l, d] with l = [l], d = {"self": d}, protocol 0 */
static const char cycle_p0[] =
    "(lp0\012(lp1\012g1\012aa(dp2\012Vself\012p3\012g2\012sa.";
/* [l, d] with l = [l], d = {"self": d}, protocol 2 */
static const char cycle_p2[] =
    "\200\002]q\000(]q\001h\001a}q\002X\004\000\000\000selfq\003h\002se.";
/* [l, d] with l = [l], d = {"self": d}, protocol 5 */
static const char cycle_p5[] =
    "\200\005\225\026\000\000\000\000\000\000\000]\224(]\224h\001a}\224\214"
    "\004self\224h\002se.";
/* np.arange(6.).reshape(2, 3), protocol 0 */
static const char np_c_p0[] =
    "cnumpy.core.multiarray\012_reconstruct\012p0\012(cnumpy\012ndarray\012p1"
    "\012(I0\012tp2\012c_codecs\012encode\012p3\012(Vb\012p4\012Vlatin1\012p5"
    "\012tp6\012Rp7\012tp8\012Rp9\012(I1\012(I2\012I3\012tp10\012cnumpy\012dt"
    "ype\012p11\012(Vf8\012p12\012I00\012I01\012tp13\012Rp14\012(I3\012V<\012"
    "p15\012NNNI-1\012I-1\012I0\012tp16\012bI00\012g3\012(V\134u0000\134u0000"
    "\134u0000\134u0000\134u0000\134u0000\134u0000\134u0000\134u0000\134u0000"
    "\134u0000\134u0000\134u0000\134u0000\360\077\134u0000\134u0000\134u0000"
    "\134u0000\134u0000\134u0000\134u0000@\134u0000\134u0000\134u0000\134u000"
    "0\134u0000\134u0000\010@\134u0000\134u0000\134u0000\134u0000\134u0000"
    "\134u0000\020@\134u0000\134u0000\134u0000\134u0000\134u0000\134u0000\024"
    "@\012p17\012g5\012tp18\012Rp19\012tp20\012b.";
/* np.arange(6.).reshape(2, 3), protocol 1 */
static const char np_c_p1[] =
    "cnumpy.core.multiarray\012_reconstruct\012q\000(cnumpy\012ndarray\012q"
    "\001(K\000tq\002c_codecs\012encode\012q\003(X\001\000\000\000bq\004X\006"
    "\000\000\000latin1q\005tq\006Rq\007tq\010Rq\011(K\001(K\002K\003tq\012cn"
    "umpy\012dtype\012q\013(X\002\000\000\000f8q\014I00\012I01\012tq\015Rq"
    "\016(K\003X\001\000\000\000<q\017NNNJ\377\377\377\377J\377\377\377\377K"
    "\000tq\020bI00\012h\003(X1\000\000\000\000\000\000\000\000\000\000\000"
    "\000\000\000\000\000\000\303\260\077\000\000\000\000\000\000\000@\000"
    "\000\000\000\000\000\010@\000\000\000\000\000\000\020@\000\000\000\000"
    "\000\000\024@q\021h\005tq\022Rq\023tq\024b.";
/* np.arange(6.).reshape(2, 3), protocol 2 */
static const char np_c_p2[] =
    "\200\002cnumpy.core.multiarray\012_reconstruct\012q\000cnumpy\012ndarray"
    "\012q\001K\000\205q\002c_codecs\012encode\012q\003X\001\000\000\000bq"
    "\004X\006\000\000\000latin1q\005\206q\006Rq\007\207q\010Rq\011(K\001K"
    "\002K\003\206q\012cnumpy\012dtype\012q\013X\002\000\000\000f8q\014\211"
    "\210\207q\015Rq\016(K\003X\001\000\000\000<q\017NNNJ\377\377\377\377J"
    "\377\377\377\377K\000tq\020b\211h\003X1\000\000\000\000\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\303\260\077\000\000\000\000\000\000"
    "\000@\000\000\000\000\000\000\010@\000\000\000\000\000\000\020@\000\000"
    "\000\000\000\000\024@q\021h\005\206q\022Rq\023tq\024b.";
/* np.arange(6.).reshape(2, 3), protocol 3 */
static const char np_c_p3[] =
    "\200\003cnumpy.core.multiarray\012_reconstruct\012q\000cnumpy\012ndarray"
    "\012q\001K\000\205q\002C\001bq\003\207q\004Rq\005(K\001K\002K\003\206q"
    "\006cnumpy\012dtype\012q\007X\002\000\000\000f8q\010\211\210\207q\011Rq"
    "\012(K\003X\001\000\000\000<q\013NNNJ\377\377\377\377J\377\377\377\377K"
    "\000tq\014b\211C0\000\000\000\000\000\000\000\000\000\000\000\000\000"
    "\000\360\077\000\000\000\000\000\000\000@\000\000\000\000\000\000\010@"
    "\000\000\000\000\000\000\020@\000\000\000\000\000\000\024@q\015tq\016b.";
/* np.arange(6.).reshape(2, 3), protocol 4 */
static const char np_c_p4[] =
    "\200\004\225\272\000\000\000\000\000\000\000\214\025numpy.core.multiarra"
    "y\224\214\014_reconstruct\224\223\224\214\005numpy\224\214\007ndarray"
    "\224\223\224K\000\205\224C\001b\224\207\224R\224(K\001K\002K\003\206\224"
    "h\003\214\005dtype\224\223\224\214\002f8\224\211\210\207\224R\224(K\003"
    "\214\001<\224NNNJ\377\377\377\377J\377\377\377\377K\000t\224b\211C0\000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000\360\077\000\000\000"
    "\000\000\000\000@\000\000\000\000\000\000\010@\000\000\000\000\000\000"
    "\020@\000\000\000\000\000\000\024@\224t\224b.";
/* np.arange(6.).reshape(2, 3), protocol 5 */
static const char np_c_p5[] =
    "\200\005\225\245\000\000\000\000\000\000\000\214\022numpy.core.numeric"
    "\224\214\013_frombuffer\224\223\224(\2260\000\000\000\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000\000\360\077\000\000"
    "\000\000\000\000\000@\000\000\000\000\000\000\010@\000\000\000\000\000"
    "\000\020@\000\000\000\000\000\000\024@\224\214\005numpy\224\214\005dtype"
    "\224\223\224\214\002f8\224\211\210\207\224R\224(K\003\214\001<\224NNNJ"
    "\377\377\377\377J\377\377\377\377K\000t\224bK\002K\003\206\224\214\001C"
    "\224t\224R\224.";
/* Fortran-order (2, 3) array, protocol 5 */
static const char np_f_p5[] =
    "\200\005\225\245\000\000\000\000\000\000\000\214\022numpy.core.numeric"
    "\224\214\013_frombuffer\224\223\224(\2260\000\000\000\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000\000\010@\000\000"
    "\000\000\000\000\360\077\000\000\000\000\000\000\020@\000\000\000\000"
    "\000\000\000@\000\000\000\000\000\000\024@\224\214\005numpy\224\214\005d"
    "type\224\223\224\214\002f8\224\211\210\207\224R\224(K\003\214\001<\224NN"
    "NJ\377\377\377\377J\377\377\377\377K\000t\224bK\002K\003\206\224\214\001"
    "F\224t\224R\224.";
/* Fortran-order (2, 3) array, protocol 2 */
static const char np_f_p2[] =
    "\200\002cnumpy.core.multiarray\012_reconstruct\012q\000cnumpy\012ndarray"
    "\012q\001K\000\205q\002c_codecs\012encode\012q\003X\001\000\000\000bq"
    "\004X\006\000\000\000latin1q\005\206q\006Rq\007\207q\010Rq\011(K\001K"
    "\002K\003\206q\012cnumpy\012dtype\012q\013X\002\000\000\000f8q\014\211"
    "\210\207q\015Rq\016(K\003X\001\000\000\000<q\017NNNJ\377\377\377\377J"
    "\377\377\377\377K\000tq\020b\210h\003X1\000\000\000\000\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\010@\000\000\000\000\000\000\303"
    "\260\077\000\000\000\000\000\000\020@\000\000\000\000\000\000\000@\000"
    "\000\000\000\000\000\024@q\021h\005\206q\022Rq\023tq\024b.";
/* a[:, ::2] (non-contiguous), protocol 5 */
static const char np_view_p5[] =
    "\200\005\225\252\000\000\000\000\000\000\000\214\025numpy.core.multiarra"
    "y\224\214\014_reconstruct\224\223\224\214\005numpy\224\214\007ndarray"
    "\224\223\224K\000\205\224C\001b\224\207\224R\224(K\001K\002K\002\206\224"
    "h\003\214\005dtype\224\223\224\214\002f8\224\211\210\207\224R\224(K\003"
    "\214\001<\224NNNJ\377\377\377\377J\377\377\377\377K\000t\224b\211C \000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000\000@\000\000\000"
    "\000\000\000\010@\000\000\000\000\000\000\024@\224t\224b.";
/* read-only big-endian int32 array, protocol 5 in band */
static const char np_ro_p5[] =
    "\200\005\225|\000\000\000\000\000\000\000\214\022numpy.core.numeric\224"
    "\214\013_frombuffer\224\223\224(C\020\000\000\000\000\000\000\000\001"
    "\000\000\000\002\000\000\000\003\224\214\005numpy\224\214\005dtype\224"
    "\223\224\214\002i4\224\211\210\207\224R\224(K\003\214\001>\224NNNJ\377"
    "\377\377\377J\377\377\377\377K\000t\224bK\004\205\224\214\001C\224t\224R"
    "\224.";
/* a, protocol 5, data out of band */
static const char np_oob_p5[] =
    "\200\005\225l\000\000\000\000\000\000\000\214\022numpy.core.numeric\224"
    "\214\013_frombuffer\224\223\224(\227\214\005numpy\224\214\005dtype\224"
    "\223\224\214\002f8\224\211\210\207\224R\224(K\003\214\001<\224NNNJ\377"
    "\377\377\377J\377\377\377\377K\000t\224bK\002K\003\206\224\214\001C\224t"
    "\224R\224.";
/* read-only array out of band */
static const char np_oob_ro_p5[] =
    "\200\005\225k\000\000\000\000\000\000\000\214\022numpy.core.numeric\224"
    "\214\013_frombuffer\224\223\224(\227\230\214\005numpy\224\214\005dtype"
    "\224\223\224\214\002i4\224\211\210\207\224R\224(K\003\214\001>\224NNNJ"
    "\377\377\377\377J\377\377\377\377K\000t\224bK\004\205\224\214\001C\224t"
    "\224R\224.";
/* np.float64(1.5), protocol 2 */
static const char np_scalar_p2[] =
    "\200\002cnumpy.core.multiarray\012scalar\012q\000cnumpy\012dtype\012q"
    "\001X\002\000\000\000f8q\002\211\210\207q\003Rq\004(K\003X\001\000\000"
    "\000<q\005NNNJ\377\377\377\377J\377\377\377\377K\000tq\006bc_codecs\012e"
    "ncode\012q\007X\011\000\000\000\000\000\000\000\000\000\303\270\077q\010"
    "X\006\000\000\000latin1q\011\206q\012Rq\013\206q\014Rq\015.";
/* np.int16(-3), protocol 4 */
static const char np_scalar_p4[] =
    "\200\004\225c\000\000\000\000\000\000\000\214\025numpy.core.multiarray"
    "\224\214\006scalar\224\223\224\214\005numpy\224\214\005dtype\224\223\224"
    "\214\002i2\224\211\210\207\224R\224(K\003\214\001<\224NNNJ\377\377\377"
    "\377J\377\377\377\377K\000t\224bC\002\375\377\224\206\224R\224.";
/* dtype f4 with metadata (state version 4) */
static const char np_dtype_meta[] =
    "\200\004\225@\000\000\000\000\000\000\000\214\005numpy\224\214\005dtype"
    "\224\223\224\214\002f4\224\211\210\207\224R\224(K\004\214\001<\224NNNJ"
    "\377\377\377\377J\377\377\377\377K\000}\224\214\001a\224K\001st\224b.";
/* np.array(['ab', 'c']) (<U2) */
static const char np_dtype_u[] =
    "\200\004\225\222\000\000\000\000\000\000\000\214\025numpy.core.multiarra"
    "y\224\214\014_reconstruct\224\223\224\214\005numpy\224\214\007ndarray"
    "\224\223\224K\000\205\224C\001b\224\207\224R\224(K\001K\002\205\224h\003"
    "\214\005dtype\224\223\224\214\002U2\224\211\210\207\224R\224(K\003\214"
    "\001<\224NNNK\010K\004K\010t\224b\211C\020a\000\000\000b\000\000\000c"
    "\000\000\000\000\000\000\000\224t\224b.";
/* bool array */
static const char np_bool[] =
    "\200\005\225u\000\000\000\000\000\000\000\214\022numpy.core.numeric\224"
    "\214\013_frombuffer\224\223\224(\226\002\000\000\000\000\000\000\000\001"
    "\000\224\214\005numpy\224\214\005dtype\224\223\224\214\002b1\224\211\210"
    "\207\224R\224(K\003\214\001|\224NNNJ\377\377\377\377J\377\377\377\377K"
    "\000t\224bK\002\205\224\214\001C\224t\224R\224.";
/* structured array */
static const char np_struct[] =
    "\200\004\225\375\000\000\000\000\000\000\000\214\025numpy.core.multiarra"
    "y\224\214\014_reconstruct\224\223\224\214\005numpy\224\214\007ndarray"
    "\224\223\224K\000\205\224C\001b\224\207\224R\224(K\001K\002\205\224h\003"
    "\214\005dtype\224\223\224\214\003V12\224\211\210\207\224R\224(K\003\214"
    "\001|\224N\214\001a\224\214\001b\224\206\224}\224(h\021h\014\214\002i4"
    "\224\211\210\207\224R\224(K\003\214\001<\224NNNJ\377\377\377\377J\377"
    "\377\377\377K\000t\224bK\000\206\224h\022h\014\214\002f8\224\211\210\207"
    "\224R\224(K\003h\030NNNJ\377\377\377\377J\377\377\377\377K\000t\224bK"
    "\004\206\224uK\014K\001K\020t\224b\211C\030\000\000\000\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\224"
    "t\224b.";
/* object array */
static const char np_object[] =
    "\200\004\225\217\000\000\000\000\000\000\000\214\025numpy.core.multiarra"
    "y\224\214\014_reconstruct\224\223\224\214\005numpy\224\214\007ndarray"
    "\224\223\224K\000\205\224C\001b\224\207\224R\224(K\001K\002\205\224h\003"
    "\214\005dtype\224\223\224\214\002O8\224\211\210\207\224R\224(K\003\214"
    "\001|\224NNNJ\377\377\377\377J\377\377\377\377K\077t\224b\211]\224(K\001"
    "\214\001a\224et\224b.";
/* datetime64 array */
static const char np_datetime[] =
    "\200\004\225\241\000\000\000\000\000\000\000\214\025numpy.core.multiarra"
    "y\224\214\014_reconstruct\224\223\224\214\005numpy\224\214\007ndarray"
    "\224\223\224K\000\205\224C\001b\224\207\224R\224(K\001K\001\205\224h\003"
    "\214\005dtype\224\223\224\214\002M8\224\211\210\207\224R\224(K\004\214"
    "\001<\224NNNJ\377\377\377\377J\377\377\377\377K\000}\224(C\001D\224K\001"
    "K\001K\001t\224\206\224t\224b\211C\010VG\000\000\000\000\000\000\224t"
    "\224b.";
/* empty (0, 3) uint8 array */
static const char np_empty[] =
    "\200\005\225u\000\000\000\000\000\000\000\214\022numpy.core.numeric\224"
    "\214\013_frombuffer\224\223\224(\226\000\000\000\000\000\000\000\000\224"
    "\214\005numpy\224\214\005dtype\224\223\224\214\002u1\224\211\210\207\224"
    "R\224(K\003\214\001|\224NNNJ\377\377\377\377J\377\377\377\377K\000t\224b"
    "K\000K\003\206\224\214\001C\224t\224R\224.";
/* 3-d view */
static const char np_3d[] =
    "\200\004\225\234\000\000\000\000\000\000\000\214\025numpy.core.multiarra"
    "y\224\214\014_reconstruct\224\223\224\214\005numpy\224\214\007ndarray"
    "\224\223\224K\000\205\224C\001b\224\207\224R\224(K\001K\002K\002K\002"
    "\207\224h\003\214\005dtype\224\223\224\214\002i2\224\211\210\207\224R"
    "\224(K\003\214\001<\224NNNJ\377\377\377\377J\377\377\377\377K\000t\224b"
    "\211C\020\004\000\006\000\010\000\012\000\020\000\022\000\024\000\026"
    "\000\224t\224b.";
/* PickleBuffers in band (writable, read-only) */
static const char pb_inband[] =
    "\200\005\225\027\000\000\000\000\000\000\000]\224(\226\003\000\000\000"
    "\000\000\000\000abc\224C\002de\224e.";
/* numpy [1.5, 2.0] as Python 2 wrote it (protocol 2, SHORT_BINSTRING data) */
static const char py2_np_p2[] =
    "\200\002cnumpy.core.multiarray\012_reconstruct\012q\001cnumpy\012ndarray"
    "\012q\002K\000\205U\001b\207Rq\003(K\001K\002\205cnumpy\012dtype\012q"
    "\004U\002f8K\000K\001\207Rq\005(K\003U\001<NNNJ\377\377\377\377J\377\377"
    "\377\377K\000tb\211U\020\000\000\000\000\000\000\370\077\000\000\000\000"
    "\000\000\000@tb.";
/* the same as Python 2 protocol 0 wrote it */
static const char py2_np_p0[] =
    "cnumpy.core.multiarray\012_reconstruct\012p0\012(cnumpy\012ndarray\012p1"
    "\012(I0\012tp2\012S'b'\012p3\012tp4\012Rp5\012(I1\012(I2\012tp6\012cnump"
    "y\012dtype\012p7\012(S'f8'\012p8\012I0\012I1\012tp9\012Rp10\012(I3\012S'"
    "<'\012p11\012NNNI-1\012I-1\012I0\012tp12\012bI00\012S'\134x00\134x00\134"
    "x00\134x00\134x00\134x00\134xf8\134x3f\134x00\134x00\134x00\134x00\134x0"
    "0\134x00\134x00\134x40'\012p13\012tp14\012b.";
/* Python 2 strs: STRING with escapes, SHORT_BINSTRING, BINSTRING */
static const char py2_str[] =
    "(lp0\012S'caf\134xe9'\012p1\012aS'a\134n\134'\042\134\134\134101\134x41"
    "\134q'\012p2\012aU\003\351t\000aT\002\000\000\000hia.";
/* nested dict/list/str/set/numpy for the allocation-failure test */
static const char alloc_p5[] =
    "\200\005\225Z\002\000\000\000\000\000\000}\224(\214\001a\224]\224(K\001X"
    ",\001\000\000xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    "xxxxxxxxxxxxxxxxxxxxxxxxx\224}\224\214\001b\224\214\022numpy.core.numeri"
    "c\224\214\013_frombuffer\224\223\224(\226 \000\000\000\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000\000\360\077\000\000"
    "\000\000\000\000\000@\000\000\000\000\000\000\010@\224\214\005numpy\224"
    "\214\005dtype\224\223\224\214\002f8\224\211\210\207\224R\224(K\003\214"
    "\001<\224NNNJ\377\377\377\377J\377\377\377\377K\000t\224bK\004\205\224"
    "\214\001C\224t\224R\224se\214\001c\224G\077\370\000\000\000\000\000\000"
    "\214\001y\224\217\224(K\001K\002\220\207\224\214\001n\224\214\025numpy.c"
    "ore.multiarray\224\214\006scalar\224\223\224h\014\214\002f4\224\211\210"
    "\207\224R\224(K\003h\020NNNJ\377\377\377\377J\377\377\377\377K\000t\224b"
    "C\004\000\000 @\224\206\224R\224\214\001z\224\212\011\000\000\000\000"
    "\000\000\000\000@u.";
/* the same, protocol 2 */
static const char alloc_p2[] =
    "\200\002}q\000(X\001\000\000\000aq\001]q\002(K\001X,\001\000\000xxxxxxxx"
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    "xxxxq\003}q\004X\001\000\000\000bq\005cnumpy.core.multiarray\012_reconst"
    "ruct\012q\006cnumpy\012ndarray\012q\007K\000\205q\010c_codecs\012encode"
    "\012q\011X\001\000\000\000bq\012X\006\000\000\000latin1q\013\206q\014Rq"
    "\015\207q\016Rq\017(K\001K\004\205q\020cnumpy\012dtype\012q\021X\002\000"
    "\000\000f8q\022\211\210\207q\023Rq\024(K\003X\001\000\000\000<q\025NNNJ"
    "\377\377\377\377J\377\377\377\377K\000tq\026b\211h\011X!\000\000\000\000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000\303\260\077\000\000"
    "\000\000\000\000\000@\000\000\000\000\000\000\010@q\027h\013\206q\030Rq"
    "\031tq\032bseX\001\000\000\000cq\033G\077\370\000\000\000\000\000\000X"
    "\001\000\000\000yq\034c__builtin__\012set\012q\035]q\036(K\001K\002e\205"
    "q\037Rq \207q!X\001\000\000\000nq\042cnumpy.core.multiarray\012scalar"
    "\012q#h\021X\002\000\000\000f4q$\211\210\207q%Rq&(K\003h\025NNNJ\377\377"
    "\377\377J\377\377\377\377K\000tq'bh\011X\004\000\000\000\000\000 @q(h"
    "\013\206q)Rq*\206q+Rq,X\001\000\000\000zq-\212\011\000\000\000\000\000"
    "\000\000\000@u.";

/* ---- helpers ------------------------------------------------------------- */

static pk_doc_t *doc;
static pk_error_t err;
static char rbuf[1024];

static int doc_setup(void **state)
{
    (void)state;
    return pk_doc_new(&doc) == PK_OK ? 0 : -1;
}

static int doc_teardown(void **state)
{
    (void)state;
    pk_doc_free(&doc);
    return 0;
}

static pk_err_t load_opts(const void *p, size_t n, const pk_load_opts_t *o,
                          pk_value_t **out)
{
    pk_error_clear(&err);
    return pk_loads(doc, p, n, o, out, NULL, &err);
}

static pk_value_t *load_ok(const void *p, size_t n, const pk_load_opts_t *o)
{
    pk_value_t *v = NULL;
    pk_err_t rc = load_opts(p, n, o, &v);
    if (rc != PK_OK)
        fail_msg("pk_loads: %s at %lld: %s", pk_errname(rc), err.offset,
                 err.msg);
    assert_non_null(v);
    return v;
}

/* Expects `code`, a message containing `msg` and, when offset >= 0, the
 * failing opcode at that offset. */
static void load_fails(const void *p, size_t n, const pk_load_opts_t *o,
                       pk_err_t code, const char *msg, long long offset)
{
    pk_value_t *v = (pk_value_t *)0x1;
    pk_err_t rc = load_opts(p, n, o, &v);
    if (rc != code)
        fail_msg("expected %s, got %s (%s)", pk_errname(code), pk_errname(rc),
                 err.msg);
    assert_int_equal(err.code, code);
    assert_ptr_equal(v, (pk_value_t *)0x1); /* *out untouched */
    if (msg != NULL && strstr(err.msg, msg) == NULL)
        fail_msg("message '%s' lacks '%s'", err.msg, msg);
    assert_true(err.offset >= 0 && (size_t)err.offset <= n);
    if (offset == -2) /* the opcode before the final STOP */
        offset = (long long)n - 2;
    if (offset >= 0) {
        assert_int_equal(err.offset, offset);
        assert_int_equal(err.opcode, ((const unsigned char *)p)[offset]);
    }
}

static const char *repr(const pk_value_t *v)
{
    return pk_repr(v, rbuf, sizeof(rbuf));
}

static void assert_int_value(const pk_value_t *v, int64_t i)
{
    assert_int_equal(v->type, PK_INT);
    assert_true(v->u.i == i);
}

static void assert_str_value(const pk_value_t *v, const char *s)
{
    assert_int_equal(v->type, PK_STR);
    assert_int_equal(v->u.str.len, strlen(s));
    assert_memory_equal(v->u.str.ptr, s, strlen(s));
    assert_int_equal(v->u.str.ptr[v->u.str.len], '\0');
}

static void assert_bytes_value(const pk_value_t *v, int type, const void *s,
                               size_t n)
{
    assert_int_equal(v->type, type);
    assert_int_equal(v->u.str.len, n);
    if (n)
        assert_memory_equal(v->u.str.ptr, s, n);
}

static void assert_big_value(const pk_value_t *v, const void *le, size_t n)
{
    pk_value_t *want = pk_bigint(doc, le, n);
    assert_non_null(want);
    assert_int_equal(v->type, PK_BIGINT);
    assert_true(pk_equal(v, want));
}

static pk_value_t *it(const pk_value_t *v, size_t i)
{
    pk_value_t *x = pk_item(v, i);
    assert_non_null(x);
    return x;
}

/* ---- refusals ----------------------------------------------------------- */

static void test_refuse_os_system(void **state)
{
    (void)state;
    static const char p[] = "cos\nsystem\n(S'echo hi'\ntR.";
    load_fails(P(p), NULL, PK_EREFUSED, NULL, 24);
    assert_string_equal(err.msg, "refusing to call os.system");
    assert_int_equal(err.opcode, 'R');
}

static void test_refuse_calls(void **state)
{
    (void)state;
    /* STACK_GLOBAL + REDUCE, NEWOBJ, NEWOBJ_EX on something not allowed. */
    load_fails(P("\x80\x04\x8c\x08"
                 "builtins\x8c\x04"
                 "eval\x93\x8c\x01"
                 "1"
                 "\x85R."),
               NULL, PK_EREFUSED, "refusing to call builtins.eval", -2);
    load_fails(P("\x80\x02"
                 "c__builtin__\nobject\n)\x81."),
               NULL, PK_EREFUSED, "refusing to call builtins.object", -2);
    load_fails(P("\x80\x04"
                 "cposix\nsystem\n)}\x92."),
               NULL, PK_EREFUSED, "refusing to call posix.system", -2);
    /* copy_reg._reconstructor (plain class instances) is refused too. */
    load_fails(P("ccopy_reg\n_reconstructor\n(c__main__\nC\nc__builtin__\n"
                 "object\nNtR."),
               NULL, PK_EREFUSED, "refusing to call copyreg._reconstructor",
               -1);
    assert_string_equal(err.msg, "refusing to call copyreg._reconstructor for "
                                 "__main__.C");
    /* _codecs.encode only for latin-1. */
    load_fails(P("\x80\x02"
                 "c_codecs\nencode\nX\x01\x00\x00\x00xX\x05\x00\x00"
                 "\x00utf-8\x86R."),
               NULL, PK_EREFUSED, "refusing to call _codecs.encode", -1);
    load_fails(P("\x80\x02"
                 "c_codecs\nencode\nX\x01\x00\x00\x00x\x85R."),
               NULL, PK_EREFUSED, "refusing to call _codecs.encode", -1);
    /* A callable that is not a global, or a NEWOBJ "class" that is a
     * function. */
    load_fails(P("K\x01)R."), NULL, PK_EPICKLE, "not a global", -2);
    load_fails(P("\x80\x02"
                 "c_codecs\nencode\n)\x81."),
               NULL, PK_EPICKLE, "isn't a type", -2);
    /* BUILD only applies numpy states. */
    load_fails(P("]K\x01"
                 "b."),
               NULL, PK_EUNSUPPORTED, "BUILD on a", -2);
    load_fails(P("cos\nsystem\n}b."), NULL, PK_EUNSUPPORTED, "BUILD", -2);
    /* Keyword arguments. */
    load_fails(P("\x80\x04"
                 "c__builtin__\nset\n)}K\x01K\x01s\x92."),
               NULL, PK_EUNSUPPORTED, "keyword", -1);
}

static void test_global_values(void **state)
{
    (void)state;
    pk_value_t *v = load_ok(P("cos\nsystem\n."), NULL);
    assert_int_equal(v->type, PK_GLOBAL);
    assert_string_equal(v->u.global.module, "os");
    assert_string_equal(v->u.global.name, "system");
    /* fix_imports below protocol 3, qualnames with dots, STACK_GLOBAL. */
    v = load_ok(P("\x80\x02"
                  "c__builtin__\nxrange\nc__builtin__\nlen\n\x86."),
                NULL);
    assert_string_equal(it(v, 0)->u.global.module, "builtins");
    assert_string_equal(it(v, 0)->u.global.name, "range");
    assert_string_equal(it(v, 1)->u.global.module, "builtins");
    v = load_ok(P("\x80\x04\x8c\x03"
                  "a.b\x8c\x05"
                  "C.f.g\x93."),
                NULL);
    assert_string_equal(v->u.global.module, "a.b");
    assert_string_equal(v->u.global.name, "C.f.g");
    v = load_ok(P("\x80\x03"
                  "c__builtin__\nlen\n."),
                NULL);
    assert_string_equal(v->u.global.module, "__builtin__");
    load_fails(P("\x80\x04K\x01\x8c\x01"
                 "a\x93."),
               NULL, PK_EPICKLE, "STACK_GLOBAL requires str", -2);
    load_fails(P("ca\x00"
                 "b\nc\n."),
               NULL, PK_EPICKLE, "bad global name", 0);
    load_fails(P("ca\xff\nc\n."), NULL, PK_EPICKLE, "bad global name", 0);
}

static void test_unsupported_opcodes(void **state)
{
    (void)state;
    load_fails(P("Pfoo\n."), NULL, PK_EUNSUPPORTED,
               "persistent IDs are not supported", 0);
    load_fails(P("K\x01Q."), NULL, PK_EUNSUPPORTED,
               "persistent IDs are not supported", 2);
    load_fails(P("\x80\x02\x82\x01."), NULL, PK_EUNSUPPORTED, "extension", 2);
    load_fails(P("\x80\x02\x83\x01\x00."), NULL, PK_EUNSUPPORTED, "extension",
               2);
    load_fails(P("\x80\x02\x84\x01\x00\x00\x00."), NULL, PK_EUNSUPPORTED,
               "extension", 2);
    load_fails(P("(i__main__\nC\n."), NULL, PK_EUNSUPPORTED, "INST/OBJ", 1);
    load_fails(P("(c__main__\nC\no."), NULL, PK_EUNSUPPORTED, "INST/OBJ", 13);
}

static void test_numpy_unsupported(void **state)
{
    (void)state;
    load_fails(P(np_struct), NULL, PK_EUNSUPPORTED, "structured", -1);
    load_fails(P(np_object), NULL, PK_EUNSUPPORTED, "object", -1);
    load_fails(P(np_datetime), NULL, PK_EUNSUPPORTED, "datetime", -1);
    /* ndarray subclasses, and a _reconstruct that would allocate. */
    load_fails(P("\x80\x02"
                 "cnumpy.core.multiarray\n_reconstruct\n"
                 "cnumpy\nmatrix\nK\x00\x85"
                 "C\x01"
                 "b\x87R."),
               NULL, PK_EUNSUPPORTED, "numpy.matrix", -1);
    load_fails(P("\x80\x03"
                 "cnumpy.core.multiarray\n_reconstruct\n"
                 "cnumpy\nndarray\nJ\x00\x00\x00\x40\x85"
                 "C\x01"
                 "b\x87R."),
               NULL, PK_EUNSUPPORTED, "non-empty", -1);
    load_fails(P("\x80\x03"
                 "cnumpy\ndtype\nX\x03\x00\x00\x00"
                 "f16\x85R."),
               NULL, PK_EUNSUPPORTED, "f16", -1);
}

/* ---- every opcode on CPython's output ----------------------------------- */

static void check_rich(const pk_value_t *v, int proto)
{
    static const uint8_t two63[] = {0, 0, 0, 0, 0, 0, 0, 0x80, 0};
    static const uint8_t m2_63m1[] = {0xff, 0xff, 0xff, 0xff, 0xff,
                                      0xff, 0xff, 0x7f, 0xff};
    static const uint8_t two100[] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10};
    uint8_t two2048[257] = {0};
    two2048[256] = 1;

    assert_int_equal(v->type, PK_LIST);
    assert_int_equal(pk_len(v), 41);
    assert_int_equal(it(v, 0)->type, PK_NONE);
    assert_ptr_equal(it(v, 1), pk_bool(1));
    assert_ptr_equal(it(v, 2), pk_bool(0));
    assert_int_value(it(v, 3), 0);
    assert_int_value(it(v, 4), 1);
    assert_int_value(it(v, 5), 255);
    assert_int_value(it(v, 6), 256);
    assert_int_value(it(v, 7), 65535);
    assert_int_value(it(v, 8), 65536);
    assert_int_value(it(v, 9), -1);
    assert_int_value(it(v, 10), INT32_MIN);
    assert_int_value(it(v, 11), INT32_MAX);
    assert_int_value(it(v, 12), (int64_t)INT32_MAX + 1);
    assert_big_value(it(v, 13), two63, sizeof(two63));
    assert_big_value(it(v, 14), m2_63m1, sizeof(m2_63m1));
    assert_big_value(it(v, 15), two100, sizeof(two100));
    assert_int_equal(it(v, 16)->type, PK_FLOAT);
    assert_true(it(v, 16)->u.f == 1.5);
    assert_true(it(v, 17)->u.f == 0.0 && signbit(it(v, 17)->u.f));
    assert_str_value(it(v, 18), "abc");
    assert_str_value(it(v, 19), "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
    assert_str_value(it(v, 20), "\xed\xa0\x80"); /* lone surrogate kept */
    assert_bytes_value(it(v, 21), PK_BYTES, "xy", 2);
    assert_bytes_value(it(v, 22), PK_BYTES, "", 0);
    assert_bytes_value(it(v, 23), PK_BYTEARRAY, "ab", 2);
    for (size_t k = 0; k <= 4; k++) {
        const pk_value_t *t = it(v, 24 + k);
        assert_int_equal(t->type, PK_TUPLE);
        assert_int_equal(pk_len(t), k);
        for (size_t j = 0; j < k; j++)
            assert_int_value(it(t, j), (int64_t)j + 1);
    }
    assert_int_equal(it(v, 29)->type, PK_LIST);
    assert_int_equal(pk_len(it(v, 29)), 0);
    assert_int_equal(it(v, 30)->type, PK_DICT);
    assert_int_equal(pk_len(it(v, 30)), 0);
    const pk_value_t *d = it(v, 31);
    assert_int_equal(d->type, PK_DICT);
    assert_int_equal(pk_len(d), 2);
    assert_int_value(pk_dict_get_str(d, "a"), 1);
    assert_int_value(d->u.dict.entries[1].key, 2);
    assert_str_value(d->u.dict.entries[1].value, "b");
    assert_int_equal(it(v, 32)->type, PK_SET);
    assert_int_equal(pk_len(it(v, 32)), 2);
    assert_true(pk_set_contains(it(v, 32), pk_int(doc, 2)));
    assert_int_equal(it(v, 33)->type, PK_FROZENSET);
    assert_true(pk_set_contains(it(v, 33), pk_int(doc, 3)));
    assert_int_equal(it(v, 34)->type, PK_COMPLEX);
    assert_true(it(v, 34)->u.c.re == 1.0 && it(v, 34)->u.c.im == 2.0);
    /* The same list twice is one value. */
    assert_ptr_equal(it(v, 35), it(v, 36));
    assert_int_value(it(it(v, 35), 0), 7);
    assert_str_value(it(it(v, 35), 1), "shared");
    assert_int_equal(pk_len(it(v, 37)), 256);
    assert_int_equal(it(v, 37)->u.str.ptr[255], 'x');
    assert_int_equal(it(v, 38)->type, PK_BYTES);
    assert_int_equal(pk_len(it(v, 38)), 256);
    assert_int_equal(it(v, 39)->type, PK_FROZENSET);
    assert_int_equal(pk_len(it(v, 39)), 5);
    assert_big_value(it(v, 40), two2048, sizeof(two2048));
    (void)proto;
}

static void test_rich_all_protocols(void **state)
{
    (void)state;
    static const struct {
        const char *p;
        size_t n;
    } pk[] = {{P(rich_p0)}, {P(rich_p1)}, {P(rich_p2)},
              {P(rich_p3)}, {P(rich_p4)}, {P(rich_p5)}};
    for (int i = 0; i < 6; i++) {
        size_t used = 0;
        pk_value_t *v = NULL;
        assert_int_equal(pk_loads(doc, pk[i].p, pk[i].n, NULL, &v, &used, &err),
                         PK_OK);
        assert_int_equal(used, pk[i].n);
        check_rich(v, i);
    }
}

static void test_cycles(void **state)
{
    (void)state;
    const char *ps[] = {cycle_p0, cycle_p2, cycle_p5};
    size_t ns[] = {sizeof(cycle_p0) - 1, sizeof(cycle_p2) - 1,
                   sizeof(cycle_p5) - 1};
    for (int i = 0; i < 3; i++) {
        pk_value_t *v = load_ok(ps[i], ns[i], NULL);
        pk_value_t *l = it(v, 0), *d = it(v, 1);
        assert_int_equal(l->type, PK_LIST);
        assert_ptr_equal(it(l, 0), l);
        assert_ptr_equal(pk_dict_get_str(d, "self"), d);
    }
    /* A list containing itself, by hand: ]q\0h\0a. */
    pk_value_t *v = load_ok(P("]q\x00h\x00"
                              "a."),
                            NULL);
    assert_ptr_equal(it(v, 0), v);
}

/* APPENDS/SETITEMS/ADDITEMS in batches of 1000 with a trailing single
 * APPEND/SETITEM, as CPython writes 1001 items. */
static void test_batches(void **state)
{
    (void)state;
    static uint8_t p[16384];
    const char *ops[] = {"]", "}", "\x8f"};
    for (int kind = 0; kind < 3; kind++) {
        size_t n = 0;
        p[n++] = 0x80;
        p[n++] = 4;
        p[n++] = (uint8_t)ops[kind][0];
        p[n++] = '(';
        for (int i = 0; i < 1000; i++) {
            p[n++] = 'M';
            p[n++] = (uint8_t)i;
            p[n++] = (uint8_t)(i >> 8);
            if (kind == 1)
                p[n++] = 'N';
        }
        p[n++] = kind == 0 ? 'e' : kind == 1 ? 'u' : '\x90';
        p[n++] = 'M';
        p[n++] = 0xe8;
        p[n++] = 0x03;
        if (kind == 1)
            p[n++] = 'N';
        if (kind == 0)
            p[n++] = 'a';
        else if (kind == 1)
            p[n++] = 's';
        else { /* a single item goes through ADDITEMS too */
            n -= 3;
            p[n++] = '(';
            p[n++] = 'M';
            p[n++] = 0xe8;
            p[n++] = 0x03;
            p[n++] = '\x90';
        }
        p[n++] = '.';
        pk_value_t *v = load_ok(p, n, NULL);
        assert_int_equal(pk_len(v), 1001);
        if (kind == 0)
            assert_int_value(it(v, 1000), 1000);
        else if (kind == 1)
            assert_int_value(v->u.dict.entries[1000].key, 1000);
        else
            assert_true(pk_set_contains(v, pk_int(doc, 1000)));
    }
}

static void test_mark_builds(void **state)
{
    (void)state;
    pk_value_t *v = load_ok(P("(K\x01K\x02"
                              "d(K\x03l(K\x04t\x80\x04(K\x05"
                              "\x91(K\x07K\x08"
                              "dK\x09K\x0as\x87."),
                            NULL);
    assert_int_equal(v->type, PK_TUPLE);
    assert_int_equal(pk_len(v), 3);
    /* d(K3l... : the dict {1: 2}, then the list [3] and (4,) and
     * frozenset({5}) - TUPLE3 takes the last three. */
    assert_int_equal(it(v, 0)->type, PK_TUPLE);
    assert_int_equal(it(v, 1)->type, PK_FROZENSET);
    assert_int_equal(it(v, 2)->type, PK_DICT);
    assert_int_value(pk_dict_get(it(v, 2), pk_int(doc, 9)), 10);
    assert_int_value(pk_dict_get(it(v, 2), pk_int(doc, 7)), 8);
}

static void test_memo_forms(void **state)
{
    (void)state;
    pk_value_t *v;
    /* LONG_BINPUT / LONG_BINGET, MEMOIZE, BINPUT / BINGET, PUT / GET. */
    v = load_ok(P("(]r\x00\x01\x00\x00j\x00\x01\x00\x00\x80\x04]\x94h\x01"
                  "]p7\ng7\nt."),
                NULL);
    assert_int_equal(pk_len(v), 6);
    assert_ptr_equal(it(v, 0), it(v, 1));
    assert_ptr_equal(it(v, 2), it(v, 3)); /* MEMOIZE took id 0 */
    assert_ptr_equal(it(v, 4), it(v, 5));
    /* Huge and sparse ids: fine (stored in a hash, not a 32 GB array). */
    v = load_ok(P("(K\x01r\xff\xff\xff\xffK\x02r\xfe\xff\xff\xffj\xff\xff"
                  "\xff\xffj\xfe\xff\xff\xffp99999999999\ng99999999999\nt."),
                NULL);
    assert_int_value(it(v, 2), 1);
    assert_int_value(it(v, 3), 2);
    assert_int_value(it(v, 4), 2);
    /* Re-PUT replaces. */
    v = load_ok(P("K\x01q\x00K\x02q\x00h\x00."), NULL);
    assert_int_value(v, 2);
    /* GET of an id never PUT. */
    load_fails(P("K\x01q\x00h\x01."), NULL, PK_EPICKLE, "memo", 4);
    load_fails(P("j\xff\xff\xff\xff."), NULL, PK_EPICKLE, "memo", 0);
    load_fails(P("g5\n."), NULL, PK_EPICKLE, "memo", 0);
    load_fails(P("K\x01px\n."), NULL, PK_EPICKLE, "bad PUT", 2);
    load_fails(P("g-1\n."), NULL, PK_EPICKLE, "bad GET", 0);
    /* PUT with nothing above the fence. */
    load_fails(P("q\x00."), NULL, PK_EPICKLE, "underflow", 0);
    load_fails(P("K\x01(\x94."), NULL, PK_EPICKLE, "underflow", 3);
    /* max_memo */
    pk_load_opts_t o;
    pk_load_opts_init(&o);
    o.max_memo = 2;
    load_ok(P("K\x01q\x00q\x01q\x00."), &o);
    load_fails(P("K\x01q\x00q\x01q\x02."), &o, PK_ELIMIT, "max_memo", 6);
    load_fails(P("K\x01r\x00\x00\x00\x10r\x00\x00\x00\x20r\x00\x00\x00\x30."),
               &o, PK_ELIMIT, "max_memo", 12);
}

static void test_stack_ops(void **state)
{
    (void)state;
    pk_value_t *v;
    /* POP, POP_MARK, DUP, POP of an empty mark. */
    v = load_ok(P("K\x01K\x02"
                  "0(K\x03K\x04"
                  "12(0\x86."),
                NULL);
    assert_int_equal(pk_len(v), 2);
    assert_int_value(it(v, 0), 1);
    assert_int_value(it(v, 1), 1);
    /* NONE, NEWTRUE, NEWFALSE, EMPTY_TUPLE, TUPLE1-3, EMPTY_* */
    v = load_ok(P("\x80\x04N\x88\x89)\x85\x86\x87]}\x8f\x87\x86."), NULL);
    assert_int_equal(v->type, PK_TUPLE);
    assert_int_equal(pk_len(v), 2);
}

static void test_frames(void **state)
{
    (void)state;
    pk_value_t *v = load_ok(P("\x80\x04\x95\x03\x00\x00\x00\x00\x00\x00\x00"
                              "K\x05.\x95\x00\x00\x00\x00\x00\x00\x00\x00"),
                            NULL);
    assert_int_value(v, 5);
    /* Frames may end before STOP (CPython's last frame may be short) and
     * trailing bytes are not ours. */
    load_fails(P("\x80\x04\x95\x04\x00\x00\x00\x00\x00\x00\x00K\x05."), NULL,
               PK_ETRUNC, "frame", 2);
    load_fails(P("\x80\x04\x95\xff\xff\xff\xff\xff\xff\xff\xff."), NULL,
               PK_ETRUNC, "frame", 2);
    load_fails(P("\x80\x04\x95\x0a\x00\x00\x00\x00\x00\x00\x00\x95\x01\x00\x00"
                 "\x00\x00\x00\x00\x00K\x05."),
               NULL, PK_EPICKLE, "new frame", 11);
}

/* One-atom pickles take a shortcut past the loader (loads_atom); these pin
 * that it agrees with the general path, and leaves it whatever is odd. */
static void test_atoms(void **state)
{
    (void)state;
    assert_int_value(load_ok(P("K\x07."), NULL), 7);
    assert_int_value(load_ok(P("\x80\x02M\x01\x02."), NULL), 0x0201);
    assert_int_value(load_ok(P("\x80\x05\x95\x06\x00\x00\x00\x00\x00\x00\x00"
                               "J\xfe\xff\xff\xff."),
                             NULL),
                     -2);
    pk_value_t *v = load_ok(P("\x80\x05\x95\x08\x00\x00\x00\x00\x00\x00\x00"
                              "\x8a\x05\x00\x00\x00\x00\x01."),
                            NULL);
    assert_int_value(v, (int64_t)1 << 32);
    v = load_ok(P("\x80\x04\x8a\x00."), NULL); /* LONG1 of no bytes: 0 */
    assert_int_value(v, 0);
    v = load_ok(P("\x80\x05\x95\x0a\x00\x00\x00\x00\x00\x00\x00"
                  "G\x3f\xf8\x00\x00\x00\x00\x00\x00."),
                NULL);
    assert_int_equal(v->type, PK_FLOAT);
    assert_true(v->u.f == 1.5);
    assert_int_equal(load_ok(P("\x80\x05N."), NULL)->type, PK_NONE);
    v = load_ok(P("\x80\x05\x88."), NULL);
    assert_true(v->type == PK_BOOL && v->u.b == 1);
    v = load_ok(P("\x89."), NULL);
    assert_true(v->type == PK_BOOL && v->u.b == 0);
    /* A frame longer than the atom: STOP ends the pickle inside it. */
    size_t used = 0;
    static const char fr[] = "\x80\x04\x95\x04\x00\x00\x00\x00\x00\x00\x00"
                             "K\x05.X";
    assert_int_equal(pk_loads(doc, fr, sizeof fr - 1, NULL, &v, &used, &err),
                     PK_OK);
    assert_int_value(v, 5);
    assert_int_equal(used, sizeof fr - 2);
    /* Left to the general path, which reports them. */
    load_fails(P("\x80\x06K\x01."), NULL, PK_EPICKLE, "protocol", 0);
    load_fails(P("\x80\x05K"), NULL, PK_ETRUNC, NULL, -1);
    load_fails(P("\x80\x05J\x01\x02."), NULL, PK_ETRUNC, NULL, -1);
    load_fails(P("\x80\x05\x8a\x09\x00."), NULL, PK_ETRUNC, NULL, -1);
    load_fails(P("\x80\x05K\x01K\x02"), NULL, PK_ETRUNC, NULL, -1);
    pk_load_opts_t o;
    pk_load_opts_init(&o);
    o.max_ops = 2;
    load_fails(P("\x80\x05K\x01."), &o, PK_ELIMIT, "max_ops", -1);
}

static void test_py2_strings(void **state)
{
    (void)state;
    pk_load_opts_t o;
    pk_load_opts_init(&o);
    /* ASCII (the default) refuses bytes >= 0x80. */
    load_fails(P(py2_str), NULL, PK_EPICKLE, "ascii", 5);
    o.encoding = PK_ENC_LATIN1;
    pk_value_t *v = load_ok(P(py2_str), &o);
    assert_str_value(it(v, 0), "caf\xc3\xa9");
    assert_str_value(it(v, 1), "a\n'\"\\AA\\q");
    assert_int_equal(it(v, 2)->type, PK_STR);
    assert_int_equal(pk_len(it(v, 2)), 4);
    assert_memory_equal(it(v, 2)->u.str.ptr, "\xc3\xa9t\0", 4);
    assert_str_value(it(v, 3), "hi");
    o.encoding = PK_ENC_BYTES;
    v = load_ok(P(py2_str), &o);
    assert_bytes_value(it(v, 0), PK_BYTES, "caf\xe9", 4);
    assert_bytes_value(it(v, 2), PK_BYTES, "\xe9t\0", 3);
    v = load_ok(P("S\"dq\"\n."), NULL);
    assert_str_value(v, "dq");
    load_fails(P("S'abc\n."), NULL, PK_EPICKLE, "quoted", 0);
    load_fails(P("Sabc\n."), NULL, PK_EPICKLE, "quoted", 0);
    load_fails(P("S'a\\'\n."), NULL, PK_EPICKLE, "trailing", 0);
    load_fails(P("S'\\x4'\n."), NULL, PK_EPICKLE, "\\x", 0);
    load_fails(P("T\xff\xff\xff\xff."), NULL, PK_EPICKLE, "negative", 0);
    load_fails(P("T\x05\x00\x00\x00"
                 "ab."),
               NULL, PK_ETRUNC, NULL, 0);
}

static void test_text_opcodes(void **state)
{
    (void)state;
    pk_value_t *v =
        load_ok(P("(I01\nI00\nI-12\nI+7\nI 3 \nL5L\nL-99999999999999"
                  "999999\nI99999999999999999999\nI0x1f\nL0b101\n"
                  "F1e300\nF-inf\nFnan\nF0.25\nt."),
                NULL);
    assert_ptr_equal(it(v, 0), pk_bool(1));
    assert_ptr_equal(it(v, 1), pk_bool(0));
    assert_int_value(it(v, 2), -12);
    assert_int_value(it(v, 3), 7);
    assert_int_value(it(v, 4), 3);
    assert_int_value(it(v, 5), 5);
    assert_int_equal(it(v, 6)->type, PK_BIGINT);
    assert_string_equal(repr(it(v, 7)), "99999999999999999999");
    assert_int_value(it(v, 8), 31);
    assert_int_value(it(v, 9), 5);
    assert_true(it(v, 10)->u.f == 1e300);
    assert_true(isinf(it(v, 11)->u.f) && it(v, 11)->u.f < 0);
    assert_true(isnan(it(v, 12)->u.f));
    assert_true(it(v, 13)->u.f == 0.25);
    v = load_ok(P("L-9223372036854775808L\n."), NULL);
    assert_int_value(v, INT64_MIN);
    load_fails(P("I12x\n."), NULL, PK_EPICKLE, "int", 0);
    load_fails(P("I\n."), NULL, PK_EPICKLE, "int", 0);
    load_fails(P("F1.5x\n."), NULL, PK_EPICKLE, "float", 0);
    load_fails(P("F0x1p3\n."), NULL, PK_EPICKLE, "float", 0);
    load_fails(P("F\n."), NULL, PK_EPICKLE, "float", 0);
    load_fails(P("I12"), NULL, PK_ETRUNC, NULL, 0);
    /* raw-unicode-escape */
    v = load_ok(P("V\\u20ac\xe9\\\\x\\U0001F600\n."), NULL);
    assert_str_value(v, "\xe2\x82\xac\xc3\xa9\\\\x\xf0\x9f\x98\x80");
    load_fails(P("V\\u12\n."), NULL, PK_EPICKLE, "escape", 0);
    load_fails(P("V\\U00110000\n."), NULL, PK_EPICKLE, "range", 0);
    /* CPython's digit limit for int text. */
    static char big[5000];
    memset(big, '9', sizeof(big));
    big[0] = 'I';
    big[sizeof(big) - 2] = '\n';
    big[sizeof(big) - 1] = '.';
    load_fails(big, sizeof(big), NULL, PK_ELIMIT, "digits", 0);
}

static void test_binary_scalars(void **state)
{
    (void)state;
    pk_value_t *v = load_ok(
        P("\x80\x05(K\xffM\xff\xffJ\xfe\xff\xff\xff\x8a\x00\x8a\x01\xff\x8b"
          "\x02\x00\x00\x00\x00\x80G\xc0\x00\x00\x00\x00\x00\x00\x00"
          "\x8d\x02\x00\x00\x00\x00\x00\x00\x00hi\x8e\x01\x00\x00\x00\x00\x00"
          "\x00\x00z\x96\x01\x00\x00\x00\x00\x00\x00\x00w\x8c\x00"
          "C\x00t."),
        NULL);
    assert_int_value(it(v, 0), 255);
    assert_int_value(it(v, 1), 65535);
    assert_int_value(it(v, 2), -2);
    assert_int_value(it(v, 3), 0);
    assert_int_value(it(v, 4), -1);
    assert_int_value(it(v, 5), -32768);
    assert_true(it(v, 6)->u.f == -2.0);
    assert_str_value(it(v, 7), "hi");
    assert_bytes_value(it(v, 8), PK_BYTES, "z", 1);
    assert_bytes_value(it(v, 9), PK_BYTEARRAY, "w", 1);
    assert_str_value(it(v, 10), "");
    assert_bytes_value(it(v, 11), PK_BYTES, "", 0);
    /* UTF-8 checked, surrogates allowed (surrogatepass). */
    load_fails(P("\x8c\x02\xc3\x28."), NULL, PK_EPICKLE, "UTF-8", 0);
    load_fails(P("\x8c\x02\xc0\x80."), NULL, PK_EPICKLE, "UTF-8", 0);
    load_fails(P("X\x04\x00\x00\x00\xf4\x90\x80\x80."), NULL, PK_EPICKLE,
               "UTF-8", 0);
    v = load_ok(P("X\x03\x00\x00\x00\xed\xb0\x80."), NULL);
    assert_int_equal(pk_len(v), 3);
    /* Python 2 BINSTRING and SHORT_BINSTRING as ASCII. */
    v = load_ok(P("U\x02okT\x01\x00\x00\x00k\x86."), NULL);
    assert_str_value(it(v, 0), "ok");
    assert_str_value(it(v, 1), "k");
}

/* ---- numpy -------------------------------------------------------------- */

static void assert_arange(const pk_value_t *v, int fortran)
{
    assert_int_equal(v->type, PK_NDARRAY);
    const pk_ndarray_t *nd = v->u.nd;
    assert_int_equal(nd->dtype.kind, 'f');
    assert_int_equal(nd->dtype.byteorder, '<');
    assert_int_equal(nd->dtype.itemsize, 8);
    assert_int_equal(nd->ndim, 2);
    assert_int_equal(nd->nbytes, 48);
    const double *d = nd->data;
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 3; j++)
            assert_true(*(const double *)((const char *)d + i * nd->strides[0] +
                                          j * nd->strides[1]) == i * 3 + j);
    if (fortran) {
        assert_true(v->flags & PK_VF_FORTRAN);
        assert_int_equal(nd->strides[0], 8);
    } else {
        assert_int_equal(nd->shape[0], 2);
        assert_int_equal(nd->shape[1], 3);
        assert_int_equal(nd->strides[0], 24);
    }
}

static void test_numpy_arrays(void **state)
{
    (void)state;
    const char *ps[] = {np_c_p0, np_c_p1, np_c_p2, np_c_p3, np_c_p4, np_c_p5};
    size_t ns[] = {sizeof(np_c_p0) - 1, sizeof(np_c_p1) - 1,
                   sizeof(np_c_p2) - 1, sizeof(np_c_p3) - 1,
                   sizeof(np_c_p4) - 1, sizeof(np_c_p5) - 1};
    for (int i = 0; i < 6; i++) {
        pk_value_t *v = load_ok(ps[i], ns[i], NULL);
        assert_arange(v, 0);
        assert_false(v->flags & PK_VF_BORROWED);
        assert_int_equal((uintptr_t)v->u.nd->data % 64, 0);
    }
    assert_arange(load_ok(P(np_f_p5), NULL), 1);
    assert_arange(load_ok(P(np_f_p2), NULL), 1);

    pk_value_t *v = load_ok(P(np_view_p5), NULL); /* a[:, ::2] */
    assert_int_equal(v->u.nd->shape[1], 2);
    assert_true(((double *)v->u.nd->data)[3] == 5.0);

    v = load_ok(P(np_ro_p5), NULL);
    assert_int_equal(v->u.nd->dtype.byteorder, '>');
    assert_int_equal(v->u.nd->dtype.kind, 'i');
    assert_true(v->flags & PK_VF_READONLY); /* in-band bytes */
    assert_memory_equal((char *)v->u.nd->data + 12, "\0\0\0\3", 4);

    v = load_ok(P(np_bool), NULL);
    assert_int_equal(v->u.nd->dtype.kind, 'b');
    assert_memory_equal(v->u.nd->data, "\1\0", 2);

    v = load_ok(P(np_dtype_u), NULL);
    assert_int_equal(v->u.nd->dtype.kind, 'U');
    assert_int_equal(v->u.nd->dtype.itemsize, 8);
    assert_int_equal(v->u.nd->nbytes, 16);

    v = load_ok(P(np_empty), NULL);
    assert_int_equal(v->u.nd->nbytes, 0);
    assert_int_equal(v->u.nd->shape[1], 3);

    v = load_ok(P(np_3d), NULL);
    assert_int_equal(v->u.nd->ndim, 3);
    assert_int_equal(v->u.nd->shape[1], 2);
    assert_int_equal(v->u.nd->shape[2], 2);
    assert_int_equal(((int16_t *)v->u.nd->data)[7], 22);

    v = load_ok(P(np_dtype_meta), NULL);
    assert_int_equal(v->type, PK_DTYPE);
    assert_int_equal(v->u.dtype->kind, 'f');
    assert_int_equal(v->u.dtype->itemsize, 4);
    assert_int_equal(v->u.dtype->byteorder, '<');

    v = load_ok(P(np_scalar_p2), NULL);
    assert_int_equal(v->type, PK_NDARRAY);
    assert_true(v->flags & PK_VF_NPSCALAR);
    assert_int_equal(v->u.nd->ndim, 0);
    assert_true(*(double *)v->u.nd->data == 1.5);
    v = load_ok(P(np_scalar_p4), NULL);
    assert_int_equal(v->u.nd->dtype.itemsize, 2);
    assert_int_equal(*(int16_t *)v->u.nd->data, -3);
}

static void test_numpy_out_of_band(void **state)
{
    (void)state;
    static double data[6] = {0, 1, 2, 3, 4, 5};
    pk_buffer_t b = {data, sizeof(data), 0};
    pk_load_opts_t o;
    pk_load_opts_init(&o);
    o.buffers = &b;
    o.nbuffers = 1;
    pk_value_t *v = load_ok(P(np_oob_p5), &o);
    assert_arange(v, 0);
    assert_ptr_equal(v->u.nd->data, data); /* zero copy */
    assert_true(v->flags & PK_VF_BORROWED);
    assert_false(v->flags & PK_VF_READONLY);

    static const int32_t ro[4] = {0};
    pk_buffer_t rb = {ro, sizeof(ro), 1};
    o.buffers = &rb;
    v = load_ok(P(np_oob_ro_p5), &o);
    assert_ptr_equal(v->u.nd->data, ro);
    assert_true(v->flags & PK_VF_READONLY);
    /* READONLY_BUFFER makes it read-only even when the buffer is not. */
    rb.readonly = 0;
    v = load_ok(P(np_oob_ro_p5), &o);
    assert_true(v->flags & PK_VF_READONLY);

    /* Missing buffer; wrong size. */
    o.nbuffers = 0;
    load_fails(P(np_oob_p5), &o, PK_EPICKLE, "out-of-band", -1);
    assert_int_equal(err.opcode, 0x97);
    pk_buffer_t small = {data, 40, 0};
    o.buffers = &small;
    o.nbuffers = 1;
    load_fails(P(np_oob_p5), &o, PK_EPICKLE, "buffer has 40 bytes", -1);
    assert_int_equal(err.opcode, 'R');
}

static void test_picklebuffer(void **state)
{
    (void)state;
    static const char data[] = "hello";
    pk_buffer_t b[2] = {{data, 5, 0}, {data, 2, 1}};
    pk_load_opts_t o;
    pk_load_opts_init(&o);
    o.buffers = b;
    o.nbuffers = 2;
    pk_value_t *v = load_ok(P("\x80\x05\x97\x97\x98\x86."), &o);
    assert_int_equal(it(v, 0)->type, PK_PICKLEBUFFER);
    assert_ptr_equal(it(v, 0)->u.str.ptr, data);
    assert_int_equal(pk_len(it(v, 0)), 5);
    assert_true(it(v, 0)->flags & PK_VF_BORROWED);
    assert_false(it(v, 0)->flags & PK_VF_READONLY);
    assert_true(it(v, 1)->flags & PK_VF_READONLY);
    /* Unused buffers are fine; a missing one is not. */
    v = load_ok(P("\x80\x05\x97."), &o);
    load_fails(P("\x80\x05\x97\x97\x97."), &o, PK_EPICKLE, "out-of-band", 4);
    load_fails(P("\x80\x05\x97."), NULL, PK_EPICKLE, "out-of-band", 2);
    load_fails(P("\x80\x05K\x01\x98."), NULL, PK_EPICKLE, "READONLY_BUFFER", 4);
    /* In band, a PickleBuffer arrives as its bytearray. */
    v = load_ok(P(pb_inband), NULL);
    assert_bytes_value(it(v, 0), PK_BYTEARRAY, "abc", 3);
    assert_bytes_value(it(v, 1), PK_BYTES, "de", 2);
}

static void test_numpy_py2(void **state)
{
    (void)state;
    pk_load_opts_t o;
    pk_load_opts_init(&o);
    load_fails(P(py2_np_p2), NULL, PK_EPICKLE, "ascii", -1);
    load_fails(P(py2_np_p0), NULL, PK_EPICKLE, "ascii", -1);
    for (int enc = PK_ENC_LATIN1; enc <= PK_ENC_BYTES; enc++) {
        o.encoding = (pk_str_encoding_t)enc;
        for (int k = 0; k < 2; k++) {
            pk_value_t *v =
                k ? load_ok(P(py2_np_p0), &o) : load_ok(P(py2_np_p2), &o);
            assert_int_equal(v->type, PK_NDARRAY);
            assert_int_equal(v->u.nd->shape[0], 2);
            assert_true(((double *)v->u.nd->data)[0] == 1.5);
            assert_true(((double *)v->u.nd->data)[1] == 2.0);
        }
    }
}

/* ---- streams, errors, limits -------------------------------------------- */

static void test_consumed(void **state)
{
    (void)state;
    static const char two[] = "\x80\x04K\x01.\x80\x02K\x02.trailing";
    size_t used = 0, off = 0;
    pk_value_t *v = NULL;
    assert_int_equal(pk_loads(doc, two, sizeof(two) - 1, NULL, &v, &used, NULL),
                     PK_OK);
    assert_int_equal(used, 5);
    assert_int_value(v, 1);
    off += used;
    assert_int_equal(
        pk_loads(doc, two + off, sizeof(two) - 1 - off, NULL, &v, &used, NULL),
        PK_OK);
    assert_int_equal(used, 5);
    assert_int_value(v, 2);
    assert_int_equal(pk_loads(doc, two, 0, NULL, &v, &used, &err), PK_ETRUNC);
    assert_int_equal(pk_loads(doc, NULL, 0, NULL, &v, NULL, &err), PK_ETRUNC);
    assert_int_equal(pk_loads(doc, NULL, 1, NULL, &v, NULL, &err), PK_EINVAL);
}

/* Every proper prefix of a valid pickle is truncated input. */
static void test_truncations(void **state)
{
    (void)state;
    const char *ps[] = {rich_p0, rich_p2,   rich_p5, np_c_p5,
                        np_c_p0, py2_np_p2, cycle_p2};
    size_t ns[] = {sizeof(rich_p0) - 1, sizeof(rich_p2) - 1,
                   sizeof(rich_p5) - 1, sizeof(np_c_p5) - 1,
                   sizeof(np_c_p0) - 1, sizeof(py2_np_p2) - 1,
                   sizeof(cycle_p2) - 1};
    pk_load_opts_t o;
    pk_load_opts_init(&o);
    o.encoding = PK_ENC_LATIN1;
    for (size_t k = 0; k < (sizeof(ps) / sizeof(ps[0])); k++) {
        for (size_t n = 0; n < ns[k]; n++) {
            pk_value_t *v = NULL;
            pk_err_t rc = pk_loads(doc, ps[k], n, &o, &v, NULL, &err);
            if (rc != PK_ETRUNC)
                fail_msg("pickle %zu cut at %zu: %s (%s)", k, n, pk_errname(rc),
                         err.msg);
            assert_true(err.offset >= 0 && (size_t)err.offset <= n);
        }
        /* and the doc does not grow without bound: start afresh */
        pk_doc_free(&doc);
        assert_int_equal(pk_doc_new(&doc), PK_OK);
    }
}

static void test_errors(void **state)
{
    (void)state;
    static const struct {
        const char *p;
        size_t n;
        pk_err_t code;
        const char *msg;
        long long off;
    } cases[] = {
        {P("K\x01"
           "a."),
         PK_EPICKLE, "underflow", 2},
        {P("."), PK_EPICKLE, "underflow", 0},
        {P("K\x01(."), PK_EPICKLE, "underflow", 3},
        {P("](K\x01"
           "a."),
         PK_EPICKLE, "underflow", 4},
        {P("(K\x01s."), PK_EPICKLE, "underflow", 3},
        {P("K\x01"
           "2(2."),
         PK_EPICKLE, "underflow", 4},
        {P("K\x01R."), PK_EPICKLE, "underflow", -2},
        {P("K\x01"
           "0"
           "0."),
         PK_EPICKLE, "underflow", 3},
        {P("1."), PK_EPICKLE, "MARK", 0},
        {P("K\x01"
           "e."),
         PK_EPICKLE, "MARK", 2},
        {P("K\x01u."), PK_EPICKLE, "MARK", 2},
        {P("K\x01t."), PK_EPICKLE, "MARK", 2},
        {P("(K\x01"
           "e."),
         PK_EPICKLE, "underflow", 3},
        {P("K\x01(K\x01"
           "e."),
         PK_EPICKLE, "APPENDS on a int", 5},
        {P("}(K\x01u."), PK_EPICKLE, "odd number of items for SETITEMS", 4},
        {P("(K\x01"
           "d."),
         PK_EPICKLE, "odd number of items for DICT", 3},
        {P("}]K\x01s."), PK_EUNHASHABLE, "unhashable", 4},
        {P("(]K\x01"
           "d."),
         PK_EUNHASHABLE, "unhashable", 4},
        {P("\x80\x04(]\x91."), PK_EUNHASHABLE, "unhashable", 4},
        {P("\x80\x04\x8f(]\x90."), PK_EUNHASHABLE, "unhashable", 5},
        {P("]K\x01s."), PK_EPICKLE, "underflow", 3},
        {P("K\x01K\x01K\x01s."), PK_EPICKLE, "SETITEM on a int", 6},
        {P("\xff"), PK_EPICKLE, "invalid load key, '\\xff'", 0},
        {P("K\x01"
           "z."),
         PK_EPICKLE, "invalid load key, 'z'", 2},
        {P("\x80\x06."), PK_EPICKLE, "unsupported pickle protocol: 6", 0},
        {P("X\xff\xff\xff\xff"), PK_ETRUNC, "truncated", 0},
        {P("\x8d\xff\xff\xff\xff\xff\xff\xff\xff"
           "ab"),
         PK_ETRUNC, NULL, 0},
        {P("\x8e\x00\x00\x00\x00\x00\x00\x00\x80"), PK_ETRUNC, NULL, 0},
        {P("\x96\x10\x00\x00\x00\x00\x00\x00\x00"
           "a."),
         PK_ETRUNC, NULL, 0},
        {P("B\xf0\xff\xff\xff."), PK_ETRUNC, NULL, 0},
        {P("\x8b\xff\xff\xff\xff."), PK_EPICKLE, "negative", 0},
        {P("\x8b\xff\xff\xff\x7f."), PK_ETRUNC, NULL, 0},
        {P("\x8a\x09\x01."), PK_ETRUNC, NULL, 0},
        {P("K"), PK_ETRUNC, NULL, 0},
        {P("K\x01"), PK_ETRUNC, "truncated", 2},
        {P("G\x00\x00."), PK_ETRUNC, NULL, 0},
        {P("cos\nsys"), PK_ETRUNC, NULL, 0},
        {P("K\x01\x98."), PK_EPICKLE, "READONLY_BUFFER on a int", 2},
        {P("K\x01K\x02\x81."), PK_EPICKLE, "not a global", 4},
        {P("c__builtin__\nset\nK\x01R."), PK_EPICKLE, "not a tuple", -2},
        {P("c__builtin__\nset\nK\x01\x85R."), PK_EPICKLE, "argument", -2},
        {P("c__builtin__\nset\n(]]t\x85R."), PK_EUNHASHABLE, "set", -2},
        {P("c__builtin__\ncomplex\n(S'x'\ntR."), PK_EPICKLE, "numbers", -2},
        {P("c__builtin__\nbytes\n((K\x01M\x00\x01ltR."), PK_EPICKLE,
         "range(0, 256)", -2},
        {P("c_codecs\nencode\n(V\\u0100\nVlatin1\ntR."), PK_EPICKLE, "U+00FF",
         -2},
        {P("cnumpy\ndtype\n(S'O8'\ntR."), PK_EUNSUPPORTED, "object", -2},
        {P("cnumpy\ndtype\n(K\x01tR."), PK_EPICKLE, "type string", -2},
        {P("cnumpy\ndtype\n(S'f8'\ntR(K\x03S'?'\ntb."), PK_EPICKLE,
         "dtype state", -2},
        {P("cnumpy\ndtype\n(S'f8'\ntR(K\x03S'<'\nK\x01NNtb."), PK_EUNSUPPORTED,
         "subarray", -2},
        {P("cnumpy\ndtype\n(S'U2'\ntR(K\x03S'<'\nNNNK\x03K\x01K\x00tb."),
         PK_EPICKLE, "item size", -2},
        {P("cnumpy.core.numeric\n_frombuffer\n(C\x01xK\x01)S'C'\ntR."),
         PK_EPICKLE, "dtype is a int", -2},
        {P("cnumpy.core.multiarray\nscalar\n(K\x01K\x01tR."), PK_EPICKLE,
         "(dtype, bytes)", -2},
        {P("cnumpy.core.multiarray\n_reconstruct\n(K\x01K\x01K\x01tR."),
         PK_EUNSUPPORTED, "only numpy.ndarray", -2},
    };
    for (size_t i = 0; i < (sizeof(cases) / sizeof(cases[0])); i++) {
        pk_value_t *v = (pk_value_t *)0x1;
        long long off =
            cases[i].off == -2 ? (long long)cases[i].n - 2 : cases[i].off;
        pk_err_t rc = load_opts(cases[i].p, cases[i].n, NULL, &v);
        if (rc != cases[i].code ||
            (cases[i].msg && !strstr(err.msg, cases[i].msg)) ||
            err.offset != off)
            fail_msg("case %zu: got %s at %lld '%s'; want %s at %lld '%s'", i,
                     pk_errname(rc), err.offset, err.msg,
                     pk_errname(cases[i].code), off,
                     cases[i].msg ? cases[i].msg : "");
        assert_int_equal(err.opcode,
                         (size_t)err.offset < cases[i].n
                             ? ((const unsigned char *)cases[i].p)[err.offset]
                             : -1);
        assert_ptr_equal(v, (pk_value_t *)0x1);
    }
    char line[300];
    assert_non_null(pk_error_format(&err, line, sizeof(line)));
}

static void test_limits(void **state)
{
    (void)state;
    static uint8_t p[8192];
    pk_load_opts_t o;
    pk_load_opts_init(&o);
    o.max_depth = 50;
    size_t n;

    /* MARKs */
    memset(p, '(', 51);
    load_fails(p, 51, &o, PK_ELIMIT, "max_depth", 50);
    memset(p, '(', 50);
    memcpy(p + 50, "K\x01.", 3);
    load_ok(p, 53, &o);
    /* lists in lists: ]]]...]aaa...a */
    for (size_t depth = 50; depth <= 51; depth++) {
        n = 0;
        for (size_t i = 0; i < depth; i++)
            p[n++] = ']';
        for (size_t i = 1; i < depth; i++)
            p[n++] = 'a';
        p[n++] = '.';
        if (depth == 50)
            load_ok(p, n, &o);
        else
            load_fails(p, n, &o, PK_ELIMIT, "max_depth", (long long)n - 2);
    }
    /* tuples in tuples with a stack of one: K\1 \x85\x85\x85... */
    n = 0;
    p[n++] = 'K';
    p[n++] = 1;
    for (int i = 0; i < 51; i++)
        p[n++] = 0x85;
    p[n++] = '.';
    load_fails(p, n, &o, PK_ELIMIT, "max_depth", (long long)n - 2);
    /* max_stack */
    o.max_stack = 100;
    n = 0;
    for (int i = 0; i < 101; i++)
        p[n++] = 'N';
    p[n++] = '.';
    load_fails(p, n, &o, PK_ELIMIT, "max_stack", 100);
    load_ok(p + 1, n - 1, &o);
    /* max_ops */
    o.max_ops = 10;
    load_fails(p, 11, &o, PK_ELIMIT, "max_ops", 10);
    load_ok(p + 92, 10, &o);
    /* max_bytes */
    o.max_bytes = 9;
    load_fails(p + 92, 10, &o, PK_ELIMIT, "max_bytes", -1);
}

/* ---- allocation failure ------------------------------------------------- */

static void test_alloc_failure(void **state)
{
    (void)state;
    static const double oob[4] = {1, 2, 3, 4};
    pk_buffer_t b = {oob, sizeof(oob), 0};
    pk_load_opts_t o;
    pk_load_opts_init(&o);
    o.buffers = &b;
    o.nbuffers = 1;
    const char *ps[] = {alloc_p5, alloc_p2, rich_p0, rich_p5};
    size_t ns[] = {sizeof(alloc_p5) - 1, sizeof(alloc_p2) - 1,
                   sizeof(rich_p0) - 1, sizeof(rich_p5) - 1};
    pk_doc_free(&doc); /* allocated with the old allocator */
    for (size_t k = 0; k < (sizeof(ps) / sizeof(ps[0])); k++) {
        int ok = 0;
        for (long fail = 1; !ok && fail < 100000; fail++) {
            pk_doc_t *d = NULL;
            pk_value_t *v = NULL;
            pk_error_t e;
            faultsim_install();
            faultsim_fail_at(fail);
            pk_err_t rc = pk_doc_new(&d);
            if (rc == PK_OK) {
                rc = pk_loads(d, ps[k], ns[k], &o, &v, NULL, &e);
                if (rc == PK_OK) {
                    ok = 1;
                    assert_true(pk_len(v) > 0);
                    assert_true(faultsim_calls() < fail); /* all seen */
                } else {
                    assert_int_equal(rc, PK_ENOMEM);
                    assert_int_equal(e.code, PK_ENOMEM);
                    assert_true(e.offset >= 0);
                }
            } else {
                assert_int_equal(rc, PK_ENOMEM);
            }
            pk_doc_free(&d);
            faultsim_remove();
            if (faultsim_live() != 0)
                fail_msg("pickle %zu, failing allocation %ld: %ld leaked", k,
                         fail, faultsim_live());
        }
        assert_true(ok);
    }
    assert_int_equal(pk_doc_new(&doc), PK_OK);
}

int main(void)
{
    alarm(120); /* hard timeout */
    const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, doc_setup, doc_teardown)
        T(test_refuse_os_system),
        T(test_refuse_calls),
        T(test_global_values),
        T(test_unsupported_opcodes),
        T(test_numpy_unsupported),
        T(test_rich_all_protocols),
        T(test_cycles),
        T(test_batches),
        T(test_mark_builds),
        T(test_memo_forms),
        T(test_stack_ops),
        T(test_frames),
        T(test_atoms),
        T(test_py2_strings),
        T(test_text_opcodes),
        T(test_binary_scalars),
        T(test_numpy_arrays),
        T(test_numpy_out_of_band),
        T(test_picklebuffer),
        T(test_numpy_py2),
        T(test_consumed),
        T(test_truncations),
        T(test_errors),
        T(test_limits),
        T(test_alloc_failure),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
