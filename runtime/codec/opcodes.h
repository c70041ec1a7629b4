/*
 * opcodes.h - the pickle opcodes of protocols 0-5 (private).
 *
 * One X-macro lists every opcode with its byte, so the decoder's dispatch, the
 * encoder and the disassembler agree on names and values.  The argument kind
 * tells the disassembler how to read the bytes after the opcode.
 */
#ifndef PK_OPCODES_H
#define PK_OPCODES_H

/* Argument kinds. */
enum pk__argkind {
    PK_ARG_NONE,
    PK_ARG_U1,       /* 1-byte unsigned */
    PK_ARG_U2,       /* 2-byte little-endian unsigned */
    PK_ARG_I4,       /* 4-byte little-endian signed */
    PK_ARG_U4,       /* 4-byte little-endian unsigned */
    PK_ARG_U8,       /* 8-byte little-endian unsigned */
    PK_ARG_F8,       /* 8-byte big-endian double */
    PK_ARG_LINE,     /* text up to '\n' */
    PK_ARG_TWOLINES, /* module '\n' name '\n' */
    PK_ARG_BYTES1,   /* 1-byte length + bytes */
    PK_ARG_BYTES4,   /* 4-byte length + bytes */
    PK_ARG_BYTES8,   /* 8-byte length + bytes */
    PK_ARG_LONG1,    /* 1-byte length + two's complement */
    PK_ARG_LONG4,    /* 4-byte length + two's complement */
};

/* X(name, byte, argkind, protocol) */
#define PK_OPCODE_MAP(X)                                                       \
    X(MARK, '(', PK_ARG_NONE, 0)                                               \
    X(STOP, '.', PK_ARG_NONE, 0)                                               \
    X(POP, '0', PK_ARG_NONE, 0)                                                \
    X(POP_MARK, '1', PK_ARG_NONE, 1)                                           \
    X(DUP, '2', PK_ARG_NONE, 0)                                                \
    X(FLOAT, 'F', PK_ARG_LINE, 0)                                              \
    X(INT, 'I', PK_ARG_LINE, 0)                                                \
    X(BININT, 'J', PK_ARG_I4, 1)                                               \
    X(BININT1, 'K', PK_ARG_U1, 1)                                              \
    X(LONG, 'L', PK_ARG_LINE, 0)                                               \
    X(BININT2, 'M', PK_ARG_U2, 1)                                              \
    X(NONE, 'N', PK_ARG_NONE, 0)                                               \
    X(PERSID, 'P', PK_ARG_LINE, 0)                                             \
    X(BINPERSID, 'Q', PK_ARG_NONE, 1)                                          \
    X(REDUCE, 'R', PK_ARG_NONE, 0)                                             \
    X(STRING, 'S', PK_ARG_LINE, 0)                                             \
    X(BINSTRING, 'T', PK_ARG_BYTES4, 1)                                        \
    X(SHORT_BINSTRING, 'U', PK_ARG_BYTES1, 1)                                  \
    X(UNICODE, 'V', PK_ARG_LINE, 0)                                            \
    X(BINUNICODE, 'X', PK_ARG_BYTES4, 1)                                       \
    X(APPEND, 'a', PK_ARG_NONE, 0)                                             \
    X(BUILD, 'b', PK_ARG_NONE, 0)                                              \
    X(GLOBAL, 'c', PK_ARG_TWOLINES, 0)                                         \
    X(DICT, 'd', PK_ARG_NONE, 0)                                               \
    X(EMPTY_DICT, '}', PK_ARG_NONE, 1)                                         \
    X(APPENDS, 'e', PK_ARG_NONE, 1)                                            \
    X(GET, 'g', PK_ARG_LINE, 0)                                                \
    X(BINGET, 'h', PK_ARG_U1, 1)                                               \
    X(INST, 'i', PK_ARG_TWOLINES, 0)                                           \
    X(LONG_BINGET, 'j', PK_ARG_U4, 1)                                          \
    X(LIST, 'l', PK_ARG_NONE, 0)                                               \
    X(EMPTY_LIST, ']', PK_ARG_NONE, 1)                                         \
    X(OBJ, 'o', PK_ARG_NONE, 1)                                                \
    X(PUT, 'p', PK_ARG_LINE, 0)                                                \
    X(BINPUT, 'q', PK_ARG_U1, 1)                                               \
    X(LONG_BINPUT, 'r', PK_ARG_U4, 1)                                          \
    X(SETITEM, 's', PK_ARG_NONE, 0)                                            \
    X(TUPLE, 't', PK_ARG_NONE, 0)                                              \
    X(EMPTY_TUPLE, ')', PK_ARG_NONE, 1)                                        \
    X(SETITEMS, 'u', PK_ARG_NONE, 1)                                           \
    X(BINFLOAT, 'G', PK_ARG_F8, 1)                                             \
    X(PROTO, '\x80', PK_ARG_U1, 2)                                             \
    X(NEWOBJ, '\x81', PK_ARG_NONE, 2)                                          \
    X(EXT1, '\x82', PK_ARG_U1, 2)                                              \
    X(EXT2, '\x83', PK_ARG_U2, 2)                                              \
    X(EXT4, '\x84', PK_ARG_I4, 2)                                              \
    X(TUPLE1, '\x85', PK_ARG_NONE, 2)                                          \
    X(TUPLE2, '\x86', PK_ARG_NONE, 2)                                          \
    X(TUPLE3, '\x87', PK_ARG_NONE, 2)                                          \
    X(NEWTRUE, '\x88', PK_ARG_NONE, 2)                                         \
    X(NEWFALSE, '\x89', PK_ARG_NONE, 2)                                        \
    X(LONG1, '\x8a', PK_ARG_LONG1, 2)                                          \
    X(LONG4, '\x8b', PK_ARG_LONG4, 2)                                          \
    X(BINBYTES, 'B', PK_ARG_BYTES4, 3)                                         \
    X(SHORT_BINBYTES, 'C', PK_ARG_BYTES1, 3)                                   \
    X(SHORT_BINUNICODE, '\x8c', PK_ARG_BYTES1, 4)                              \
    X(BINUNICODE8, '\x8d', PK_ARG_BYTES8, 4)                                   \
    X(BINBYTES8, '\x8e', PK_ARG_BYTES8, 4)                                     \
    X(EMPTY_SET, '\x8f', PK_ARG_NONE, 4)                                       \
    X(ADDITEMS, '\x90', PK_ARG_NONE, 4)                                        \
    X(FROZENSET, '\x91', PK_ARG_NONE, 4)                                       \
    X(NEWOBJ_EX, '\x92', PK_ARG_NONE, 4)                                       \
    X(STACK_GLOBAL, '\x93', PK_ARG_NONE, 4)                                    \
    X(MEMOIZE, '\x94', PK_ARG_NONE, 4)                                         \
    X(FRAME, '\x95', PK_ARG_U8, 4)                                             \
    X(BYTEARRAY8, '\x96', PK_ARG_BYTES8, 5)                                    \
    X(NEXT_BUFFER, '\x97', PK_ARG_NONE, 5)                                     \
    X(READONLY_BUFFER, '\x98', PK_ARG_NONE, 5)

enum pk__opcode {
#define PK__OP_ENUM(name, byte, arg, proto)                                    \
    PK_OP_##name = (unsigned char)(byte),
    PK_OPCODE_MAP(PK__OP_ENUM)
#undef PK__OP_ENUM
};

/* CPython's framing target (pickle.py _Framer._FRAME_SIZE_TARGET). */
#define PK_FRAME_SIZE_TARGET (64 * 1024)
/* CPython's batch size for APPENDS / SETITEMS / ADDITEMS. */
#define PK_BATCHSIZE 1000

#endif /* PK_OPCODES_H */
